//! `Content-Encoding` for what compresses well and is not compressed already: narinfos,
//! listings, logs, build traces, and NARs stored without compression (`Compression: none`).
//! Encoded (zstd, br or gzip, by the request's `Accept-Encoding` and its q-values) only when the
//! client lists one: Nix 2.34's libcurl lists what it decodes, Nix 2.8 lists none and gets the
//! bytes as stored. Never a range (`206`), a `HEAD` or anything not marked [`encodable`]; every
//! marked answer says `Vary: Accept-Encoding`, so a cache in front keeps the variants apart.

use axum::body::HttpBody as Body;
use axum::{
    http::{header, HeaderValue, Response, StatusCode},
    response::Response as AxumResponse,
};
use tower_http::compression::{predicate::Predicate, CompressionLayer};
use tower_http::CompressionLevel;

/// Bodies smaller than this go as they are: encoding them saves a few bytes for the CPU.
const MIN_ENCODED: u64 = 512;
/// zstd, br and gzip at level 3: fast enough to keep up with a NAR stream, most of the gain.
const LEVEL: i32 = 3;

/// The mark of an answer that may be encoded.
#[derive(Clone, Copy, Debug)]
struct Encodable;

/// Marks `response` (a `200` to a `GET`) as one that may be encoded.
pub fn encodable(response: &mut AxumResponse) {
    response.extensions_mut().insert(Encodable);
}

/// Encodes the marked `200` answers of at least [`MIN_ENCODED`] bytes.
#[derive(Clone, Copy, Debug)]
pub struct MarkedOnly;

impl Predicate for MarkedOnly {
    fn should_compress<B: Body>(&self, response: &Response<B>) -> bool {
        response.status() == StatusCode::OK
            && response.extensions().get::<Encodable>().is_some()
            && !response.headers().contains_key(header::CONTENT_RANGE)
            && response
                .body()
                .size_hint()
                .upper()
                .is_none_or(|n| n >= MIN_ENCODED)
    }
}

/// `body`, ending for good once it ended: an encoder may poll its input once more after the
/// end, which a stream such as `unfold` does not allow.
pub fn fused(body: crate::storage::ByteStream) -> futures::stream::Fuse<crate::storage::ByteStream> {
    futures::StreamExt::fuse(body)
}

/// The layer that encodes.
pub fn layer() -> CompressionLayer<MarkedOnly> {
    CompressionLayer::new()
        .no_deflate()
        .quality(CompressionLevel::Precise(LEVEL))
        .compress_when(MarkedOnly)
}

/// An encoded answer's `ETag` is weak: the encoded bytes are not the stored file's, and another
/// encoding of it would carry the same tag (RFC 9110 8.8.1).
pub async fn weaken_etag(mut response: AxumResponse) -> AxumResponse {
    let headers = response.headers_mut();
    if headers.contains_key(header::CONTENT_ENCODING) {
        if let Some(strong) = headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.starts_with("W/"))
            .and_then(|v| HeaderValue::from_str(&format!("W/{v}")).ok())
        {
            headers.insert(header::ETAG, strong);
        }
    }
    response
}
