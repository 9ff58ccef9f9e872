//! `Content-Encoding` for what compresses well and is not compressed already: narinfos,
//! listings, logs, build traces, and NARs stored without compression (`Compression: none`).
//! Encoded (zstd, br or gzip, by the request's `Accept-Encoding` and its q-values) only when the
//! client lists one: Nix 2.34's libcurl lists what it decodes, Nix 2.8 lists none and gets the
//! bytes as stored. Never a range (`206`), a `HEAD` or anything not marked by
//! [`Encoders::offer`]; every answer of something that would be encoded (a `HEAD`, a `206` and
//! a `304` too) says `Vary: Accept-Encoding`, so a cache in front keeps the variants apart.
//! `--content-encoding off` turns it all off.

use std::sync::Arc;

use axum::body::HttpBody as Body;
use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue, Response, StatusCode},
    response::Response as AxumResponse,
};
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;
use tower_http::compression::{predicate::Predicate, CompressionLayer};
use tower_http::CompressionLevel;

use crate::metrics::{Encoding, Metrics};

/// Answers smaller than this go as they are: most narinfos and build traces, whose encoding
/// would cost more CPU on the hit path than the bytes it saves.
const MIN_ENCODED: u64 = 4 << 10;
/// Answers larger than this go as they are: Nix resumes an interrupted download with a `Range`
/// only when it was not encoded, and a large NAR is worth resuming; it also bounds the CPU one
/// answer costs (zstd at level 3 runs at ~175 MB/s on one core, on the runtime's threads).
const MAX_ENCODED: u64 = 16 << 20;
/// Answers being encoded at once (each encoder holds up to ~3.4 MiB); past that, answers go
/// as they are.
pub const ENCODERS: usize = 32;
/// zstd, br and gzip at level 3: fast enough to keep up with a NAR stream, most of the gain.
const LEVEL: i32 = 3;

/// The mark of an answer that may be encoded.
#[derive(Clone, Copy, Debug)]
struct Encodable;

/// Whether answers are encoded (`--content-encoding`), and the encoders' turns.
#[derive(Clone, Debug)]
pub struct Encoders {
    /// `None` when encoding is off.
    turns: Option<Arc<Semaphore>>,
    /// Answers that would have been encoded but went as stored, every encoder being busy.
    busy: Counter,
}

impl Encoders {
    /// `on`: encode for clients that ask; off: never.
    pub fn new(on: bool, busy: Counter) -> Encoders {
        let turns = on.then(|| Arc::new(Semaphore::new(ENCODERS)));
        Encoders { turns, busy }
    }

    /// Whether a whole answer of `len` bytes is one to encode for a client that asks.
    fn encodes(&self, len: u64) -> bool {
        self.turns.is_some() && (MIN_ENCODED..=MAX_ENCODED).contains(&len)
    }

    /// For an answer of something that compresses well, whose whole body is `len` bytes: when
    /// it is `whole` (a `200` to a `GET`), lets it be encoded if its size is worth it and an
    /// encoder is free (its body then holds that turn until it is dropped, and says its length,
    /// which tower-http drops when it encodes). Any answer of such a size (a `HEAD`, a `206`)
    /// says `Vary: Accept-Encoding`, as its `200` does.
    pub fn offer(&self, response: &mut AxumResponse, len: u64, whole: bool) {
        if !self.encodes(len) {
            return;
        }
        vary(response.headers_mut());
        let turn = match &self.turns {
            Some(turns) if whole => Arc::clone(turns).try_acquire_owned(),
            _ => return,
        };
        let Ok(turn) = turn else {
            self.busy.inc();
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

    /// A `304` for something whose whole body is `len` bytes says what its `200` to `request`
    /// would have said (RFC 9110 15.4.5): `Vary`, and the weak form of its `ETag` when that
    /// `200` would have been encoded.
    pub fn not_modified(&self, response: &mut AxumResponse, request: &HeaderMap, len: u64) {
        if !self.encodes(len) {
            return;
        }
        vary(response.headers_mut());
        if accepts_encoding(request) {
            weaken(response.headers_mut());
        }
    }
}

fn vary(headers: &mut HeaderMap) {
    let varies = headers
        .get_all(header::VARY)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"accept-encoding"));
    if !varies {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

/// Whether `Accept-Encoding` lists an encoding the layer uses (or `*`) with a q-value above 0.
fn accepts_encoding(request: &HeaderMap) -> bool {
    request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let ours = name == "*" || Encoding::from_token(name).is_some();
            let q = parts
                .filter_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            ours && q > 0.0
        })
}

/// Encodes the answers [`Encoders::offer`] let be encoded.
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

/// After the layer: an encoded answer's `ETag` is weak (the encoded bytes are not the stored
/// file's, and another encoding of it would carry the same tag, RFC 9110 8.8.1), and the answer
/// is counted by its encoding.
pub async fn after_encoding(State(metrics): State<Arc<Metrics>>, mut response: AxumResponse) -> AxumResponse {
    let encoding = response
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .and_then(Encoding::from_token);
    if let Some(encoding) = encoding {
        weaken(response.headers_mut());
        metrics.encoded(encoding);
    }
    response
}

fn weaken(headers: &mut HeaderMap) {
    if let Some(weak) = headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.starts_with("W/"))
        .and_then(|v| HeaderValue::from_str(&format!("W/{v}")).ok())
    {
        headers.insert(header::ETAG, weak);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn accepts_what_the_layer_encodes_with_a_q_above_zero() {
        assert!(accepts_encoding(&accept(&["deflate, gzip, br, zstd"]))); // Nix 2.34
        assert!(accepts_encoding(&accept(&["identity", "zstd;q=0.5"])));
        assert!(accepts_encoding(&accept(&["*"])));
        assert!(accepts_encoding(&accept(&["X-GZIP"])));
        assert!(!accepts_encoding(&accept(&[])), "Nix 2.8 sends none");
        assert!(!accepts_encoding(&accept(&["deflate, identity"])));
        assert!(!accepts_encoding(&accept(&["zstd;q=0, br; q=0.000"])));
    }

    #[test]
    fn off_encodes_nothing_and_says_nothing() {
        let off = Encoders::new(false, Counter::default());
        let mut response = AxumResponse::new(axum::body::Body::from(vec![b'a'; 8 << 10]));
        off.offer(&mut response, 8 << 10, true);
        assert!(response.extensions().get::<Encodable>().is_none());
        assert!(response.headers().get(header::VARY).is_none());
    }

    #[test]
    fn a_head_or_range_varies_but_is_not_marked_and_small_answers_neither() {
        let on = Encoders::new(true, Counter::default());
        let mut head = AxumResponse::new(axum::body::Body::empty());
        on.offer(&mut head, 8 << 10, false);
        assert_eq!(head.headers()[header::VARY], "accept-encoding");
        assert!(head.extensions().get::<Encodable>().is_none());
        let mut small = AxumResponse::new(axum::body::Body::from("x"));
        on.offer(&mut small, 1, true);
        assert!(small.headers().get(header::VARY).is_none());
        assert!(small.extensions().get::<Encodable>().is_none());
    }

    #[test]
    fn every_encoder_busy_goes_as_stored_still_varying_and_counted() {
        let busy = Counter::default();
        let on = Encoders::new(true, busy.clone());
        let held: Vec<_> = (0..ENCODERS)
            .map(|_| {
                let mut r = AxumResponse::new(axum::body::Body::from(vec![0u8; 8 << 10]));
                on.offer(&mut r, 8 << 10, true);
                assert!(r.extensions().get::<Encodable>().is_some());
                r
            })
            .collect();
        let mut past = AxumResponse::new(axum::body::Body::from(vec![0u8; 8 << 10]));
        on.offer(&mut past, 8 << 10, true);
        assert!(past.extensions().get::<Encodable>().is_none());
        assert_eq!(past.headers()[header::VARY], "accept-encoding");
        assert_eq!(busy.get(), 1);
        drop(held);
        let mut again = AxumResponse::new(axum::body::Body::from(vec![0u8; 8 << 10]));
        on.offer(&mut again, 8 << 10, true);
        assert!(
            again.extensions().get::<Encodable>().is_some(),
            "the turns came back"
        );
    }

    #[test]
    fn a_not_modified_carries_the_tag_its_200_would_have() {
        let on = Encoders::new(true, Counter::default());
        let with_tag = || {
            let mut r = AxumResponse::new(axum::body::Body::empty());
            r.headers_mut()
                .insert(header::ETAG, HeaderValue::from_static("\"f.nar\""));
            r
        };
        let mut encoded = with_tag();
        on.not_modified(&mut encoded, &accept(&["gzip"]), 8 << 10);
        assert_eq!(encoded.headers()[header::ETAG], "W/\"f.nar\"");
        assert_eq!(encoded.headers()[header::VARY], "accept-encoding");
        let mut plain = with_tag();
        on.not_modified(&mut plain, &accept(&[]), 8 << 10);
        assert_eq!(plain.headers()[header::ETAG], "\"f.nar\"");
        assert_eq!(plain.headers()[header::VARY], "accept-encoding");
        let mut large = with_tag();
        on.not_modified(&mut large, &accept(&["gzip"]), MAX_ENCODED + 1);
        assert_eq!(large.headers()[header::ETAG], "\"f.nar\"");
        assert!(large.headers().get(header::VARY).is_none());
    }
}
