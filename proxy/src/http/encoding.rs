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
use futures::StreamExt;
use tokio::sync::Semaphore;
use tower_http::compression::{predicate::Predicate, CompressionLayer};
use tower_http::CompressionLevel;

/// Answers smaller than this go as they are: most narinfos and build traces, whose encoding
/// would cost more CPU on the hit path than the bytes it saves.
const MIN_ENCODED: u64 = 4 << 10;
/// Answers larger than this go as they are: Nix resumes an interrupted download with a `Range`
/// only when it was not encoded, and a large NAR is worth resuming; it also bounds the CPU one
/// answer costs (zstd at level 3 runs at ~175 MB/s on one core, on the runtime's threads).
const MAX_ENCODED: u64 = 16 << 20;
/// Answers being encoded at once (each encoder holds up to ~3.4 MiB); past that, answers go
/// as they are.
static ENCODERS: Semaphore = Semaphore::const_new(32);
/// zstd, br and gzip at level 3: fast enough to keep up with a NAR stream, most of the gain.
const LEVEL: i32 = 3;

/// The mark of an answer that may be encoded.
#[derive(Clone, Copy, Debug)]
struct Encodable;

/// Lets `response` (a whole `200` to a `GET`, of `len` bytes) be encoded, when its size is
/// worth it and an encoder is free: its body then holds that turn until it is dropped, and says
/// its length (tower-http drops it when it encodes).
pub fn offer(response: &mut AxumResponse, len: u64) {
    if !(MIN_ENCODED..=MAX_ENCODED).contains(&len) {
        return;
    }
    let Ok(turn) = ENCODERS.try_acquire() else {
        return;
    };
    let body = std::mem::take(response.body_mut()).into_data_stream();
    // `chain` never polls the body past its end; the turn goes when the stream is dropped.
    let held = body.chain(futures::stream::poll_fn(move |_| {
        let _turn = &turn;
        std::task::Poll::Ready(None)
    }));
    *response.body_mut() = axum::body::Body::from_stream(held.fuse());
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    response.extensions_mut().insert(Encodable);
}

/// Encodes the answers [`offer`] let be encoded.
#[derive(Clone, Copy, Debug)]
pub struct MarkedOnly;

impl Predicate for MarkedOnly {
    fn should_compress<B: Body>(&self, response: &Response<B>) -> bool {
        response.status() == StatusCode::OK
            && response.extensions().get::<Encodable>().is_some()
            && !response.headers().contains_key(header::CONTENT_RANGE)
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
