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

    /// For an answer (headers set) of something that compresses well, whose whole body is
    /// `len` bytes, to `request`: when it is `whole` (a `200` to a `GET`) and the request asks
    /// for an encoding, lets it be encoded if its size is worth it and an encoder is free (its
    /// body then holds that turn until it is dropped, and says its length, which tower-http
    /// drops when it encodes). Any answer of such a size says `Vary: Accept-Encoding`; a `200`
    /// to a request that asks for an encoding carries the weak `ETag`, encoded or not (a `HEAD`,
    /// every encoder busy), so its `HEAD` and `304` say what its `GET` says.
    pub fn offer(&self, response: &mut AxumResponse, request: &HeaderMap, len: u64, whole: bool) {
        if !self.encodes(len) {
            return;
        }
        vary(response.headers_mut());
        if chosen_encoding(request).is_none() || response.status() != StatusCode::OK {
            return;
        }
        weaken(response.headers_mut());
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
    /// would have said (RFC 9110 15.4.5): `Vary`, and the weak `ETag` when the request asks
    /// for an encoding.
    pub fn not_modified(&self, response: &mut AxumResponse, request: &HeaderMap, len: u64) {
        if !self.encodes(len) {
            return;
        }
        vary(response.headers_mut());
        if chosen_encoding(request).is_some() {
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

/// The encoding the layer picks for `request`, as tower-http 0.6 picks it: the accepted one
/// with the highest q-value (`identity` competes; zstd, then br, then gzip on a tie), items
/// with another parameter or a malformed q-value ignored, `*` too; `None` for identity.
fn chosen_encoding(request: &HeaderMap) -> Option<Encoding> {
    request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.splitn(2, ';');
            let name = parts.next().unwrap_or_default().trim();
            let encoding = match Encoding::from_token(name) {
                Some(e) => Some(e),
                None if name.eq_ignore_ascii_case("identity") => None,
                None => return None,
            };
            let q = match parts.next() {
                Some(q) => q_value(q.trim())?,
                None => 1000,
            };
            Some((q, rank(encoding), encoding))
        })
        .filter(|(q, _, _)| *q > 0)
        .max_by_key(|(q, rank, _)| (*q, *rank))
        .and_then(|(_, _, encoding)| encoding)
}

/// The preference on a tie: identity least, zstd most.
fn rank(encoding: Option<Encoding>) -> u8 {
    match encoding {
        None => 0,
        Some(Encoding::Gzip) => 1,
        Some(Encoding::Br) => 2,
        Some(Encoding::Zstd) => 3,
    }
}

/// `q=0`, `q=1`, `q=0.5`… in thousandths (RFC 9110 12.4.2: at most three decimals, 1 at most).
fn q_value(text: &str) -> Option<u16> {
    let value = text.strip_prefix("q=").or_else(|| text.strip_prefix("Q="))?;
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let whole: u16 = match whole {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    let q = whole + thousandths;
    (q <= 1000).then_some(q)
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
    fn picks_as_tower_http_does() {
        let pick = |values: &[&str]| chosen_encoding(&accept(values));
        assert_eq!(pick(&["deflate, gzip, br, zstd"]), Some(Encoding::Zstd)); // Nix 2.34
        assert_eq!(pick(&["gzip;q=0.5, br"]), Some(Encoding::Br));
        assert_eq!(pick(&["X-GZIP"]), Some(Encoding::Gzip));
        assert_eq!(pick(&["identity", "zstd;q=0.5"]), None, "identity at q=1 wins");
        assert_eq!(pick(&["identity;q=0.4", "zstd;q=0.5"]), Some(Encoding::Zstd));
        assert_eq!(
            pick(&["identity, gzip"]),
            Some(Encoding::Gzip),
            "a tie goes to gzip"
        );
        assert_eq!(pick(&["*"]), None);
        assert_eq!(pick(&[]), None, "Nix 2.8 sends none");
        assert_eq!(pick(&["deflate, compress"]), None);
        assert_eq!(pick(&["zstd;q=0, br; q=0.000"]), None);
        for malformed in [
            "gzip;q=.5",
            "gzip;q=inf",
            "gzip;level=1",
            "gzip;q=0.1234",
            "gzip;q=1.5",
        ] {
            assert_eq!(pick(&[malformed]), None, "{malformed}");
        }
    }

    #[test]
    fn off_encodes_nothing_and_says_nothing() {
        let off = Encoders::new(false, Counter::default());
        let mut response = AxumResponse::new(axum::body::Body::from(vec![b'a'; 8 << 10]));
        off.offer(&mut response, &accept(&["zstd"]), 8 << 10, true);
        assert!(response.extensions().get::<Encodable>().is_none());
        assert!(response.headers().get(header::VARY).is_none());
    }

    #[test]
    fn a_head_or_range_varies_but_is_not_marked_and_small_answers_neither() {
        let on = Encoders::new(true, Counter::default());
        let mut head = AxumResponse::new(axum::body::Body::empty());
        on.offer(&mut head, &accept(&["zstd"]), 8 << 10, false);
        assert_eq!(head.headers()[header::VARY], "accept-encoding");
        assert!(head.extensions().get::<Encodable>().is_none());
        let mut small = AxumResponse::new(axum::body::Body::from("x"));
        on.offer(&mut small, &accept(&["zstd"]), 1, true);
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
                on.offer(&mut r, &accept(&["zstd"]), 8 << 10, true);
                assert!(r.extensions().get::<Encodable>().is_some());
                r
            })
            .collect();
        let mut past = AxumResponse::new(axum::body::Body::from(vec![0u8; 8 << 10]));
        on.offer(&mut past, &accept(&["zstd"]), 8 << 10, true);
        assert!(past.extensions().get::<Encodable>().is_none());
        assert_eq!(past.headers()[header::VARY], "accept-encoding");
        assert_eq!(busy.get(), 1);
        drop(held);
        let mut again = AxumResponse::new(axum::body::Body::from(vec![0u8; 8 << 10]));
        on.offer(&mut again, &accept(&["zstd"]), 8 << 10, true);
        assert!(
            again.extensions().get::<Encodable>().is_some(),
            "the turns came back"
        );
    }

    #[test]
    fn a_client_that_asks_for_no_encoding_takes_no_turn() {
        let busy = Counter::default();
        let on = Encoders::new(true, busy.clone());
        for _ in 0..ENCODERS + 1 {
            let mut r = AxumResponse::new(axum::body::Body::from(vec![0u8; 8 << 10]));
            r.headers_mut()
                .insert(header::ETAG, HeaderValue::from_static("\"f.nar\""));
            on.offer(&mut r, &accept(&[]), 8 << 10, true);
            assert!(r.extensions().get::<Encodable>().is_none());
            assert_eq!(r.headers()[header::VARY], "accept-encoding");
            assert_eq!(
                r.headers()[header::ETAG],
                "\"f.nar\"",
                "identity keeps the strong tag"
            );
        }
        assert_eq!(busy.get(), 0);
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
