//! The request handler of [`super::TestUpstream`]: files of the cache
//! directory, GET and HEAD, single ranges, faults.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::time::Instant;

use super::{Faults, Shared};

impl Shared {
    /// Counts a request; returns the faults that apply to it and how many
    /// requests for this path came since the faults were set.
    fn record(&self, method: &Method, path: &str) -> Option<(Faults, u32)> {
        let mut state = self.lock();
        let counters = match *method {
            Method::GET => &mut state.stats.gets,
            Method::HEAD => &mut state.stats.heads,
            _ => &mut state.stats.others,
        };
        *counters.entry(path.to_string()).or_default() += 1;
        let faults = state
            .faults
            .iter()
            .find(|f| **f != Faults::default() && f.applies_to(path))?
            .clone();
        let seen = state.seen.entry(path.to_string()).or_default();
        *seen += 1;
        let nth = *seen;
        Some((faults, nth))
    }

    fn count_fault(&self) {
        self.lock().stats.faults += 1;
    }
}

pub(super) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path();
    let faults = shared.record(&method, path);
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    if let Some((faults, nth)) = &faults {
        if !faults.delay.is_zero() {
            tokio::time::sleep(faults.delay).await;
        }
        if *nth <= faults.fail_first_n {
            shared.count_fault();
            let status =
                StatusCode::from_u16(faults.fail_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return plain(status, "injected fault\n");
        }
    }
    let Some(file) = resolve(&shared.root, path).await else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    let body_faults = faults
        .map(|(mut f, nth)| {
            if f.body_faults_first_n != 0 && nth > f.body_faults_first_n {
                (f.truncate, f.corrupt) = (false, false);
            }
            f
        })
        .filter(|f| method == Method::GET && has_body_faults(f));
    if body_faults.as_ref().is_some_and(|f| f.truncate || f.corrupt) {
        shared.count_fault();
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    match serve_file(&file, path, method == Method::HEAD, range, body_faults).await {
        Ok(response) => response,
        Err(_) => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn has_body_faults(f: &Faults) -> bool {
    f.rate_bytes_per_s > 0 || f.truncate || f.corrupt
}

/// A short text answer with its `Content-Length`.
fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    response
}

/// The regular file a request path names inside `root`, or None: each segment percent-decoded
/// as a static file server decodes it (Nix 2.32+ sends `realisations/…%21out.doi`), then no
/// empty, `.`, `..` or hidden segments, no separators or NULs, no directories, no symlinks.
async fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = path.strip_prefix('/')?;
    let mut out = root.to_path_buf();
    for raw in rel.split('/') {
        let segment = percent_decoded(raw)?;
        let bad = segment.is_empty() || segment.starts_with('.') || segment.contains(['/', '\\', '%', '\0']);
        if bad {
            return None;
        }
        out.push(segment);
    }
    let meta = tokio::fs::symlink_metadata(&out).await.ok()?;
    meta.is_file().then_some(out)
}

/// `%XX` escapes decoded; None for a broken escape or bytes that are not UTF-8.
fn percent_decoded(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Nix's content types, as cache.nixos.org sends them.
fn content_type(path: &str) -> &'static str {
    let nar_like = path.starts_with("/nar/") && path.contains(".nar");
    match path {
        "/nix-cache-info" => "text/x-nix-cache-info",
        p if p.ends_with(".narinfo") => "text/x-nix-narinfo",
        p if p.ends_with(".ls") => "application/json",
        _ if nar_like => "application/x-nix-nar",
        _ => "application/octet-stream",
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Range {
    Full,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range; several ranges or a malformed header mean the whole
/// file, as most servers do.
fn parse_range(header: &str, len: u64) -> Range {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Range::Full;
    };
    if spec.contains(',') {
        return Range::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Range::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    match (first.parse::<u64>(), last.parse::<u64>()) {
        (Ok(a), _) if a >= len => Range::Unsatisfiable,
        (Ok(a), Ok(b)) if b >= a => Range::Part(a, b.min(len - 1)),
        (Ok(a), Err(_)) if last.is_empty() => Range::Part(a, len - 1),
        (Err(_), Ok(0)) if first.is_empty() => Range::Unsatisfiable,
        (Err(_), Ok(n)) if first.is_empty() && len > 0 => Range::Part(len.saturating_sub(n), len - 1),
        (Err(_), Ok(_)) if first.is_empty() => Range::Unsatisfiable,
        _ => Range::Full,
    }
}

async fn serve_file(
    file: &Path,
    path: &str,
    head: bool,
    range: Option<&str>,
    faults: Option<Faults>,
) -> io::Result<Response> {
    let mut handle = tokio::fs::File::open(file).await?;
    let len = handle.metadata().await?.len();
    let range = range.map_or(Range::Full, |r| parse_range(r, len));
    let builder = Response::builder()
        .header(header::CONTENT_TYPE, content_type(path))
        .header(header::ACCEPT_RANGES, "bytes");
    let (builder, start, count) = match range {
        Range::Full => (builder.status(StatusCode::OK), 0, len),
        Range::Part(a, b) => {
            let builder = builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{len}"));
            (builder, a, b - a + 1)
        }
        Range::Unsatisfiable => {
            let builder = builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"));
            (builder, 0, 0)
        }
    };
    let builder = builder.header(header::CONTENT_LENGTH, count);
    if head || count == 0 {
        return builder.body(Body::empty()).map_err(io::Error::other);
    }
    handle.seek(io::SeekFrom::Start(start)).await?;
    let body = Body::from_stream(body_stream(Sending::new(
        handle,
        count,
        faults.unwrap_or_default(),
    )));
    builder.body(body).map_err(io::Error::other)
}

/// A body on its way: `total` bytes from `file`, paced and damaged as the
/// faults say.
struct Sending {
    file: tokio::fs::File,
    sent: u64,
    total: u64,
    chunk: u64,
    rate: u64,
    /// Close the connection (with an error) once this many bytes are sent.
    cut_at: Option<u64>,
    /// Flip the byte at this offset of the body.
    flip_at: Option<u64>,
    started: Instant,
}

impl Sending {
    fn new(file: tokio::fs::File, total: u64, faults: Faults) -> Sending {
        let rate = faults.rate_bytes_per_s;
        let chunk = if rate > 0 {
            (rate / 50).clamp(1024, 64 * 1024)
        } else {
            64 * 1024
        };
        Sending {
            file,
            sent: 0,
            total,
            chunk,
            rate,
            cut_at: faults.truncate.then_some(total / 2),
            flip_at: faults.corrupt.then_some(total / 2),
            started: Instant::now(),
        }
    }
}

fn body_stream(sending: Sending) -> impl futures::Stream<Item = io::Result<Bytes>> {
    futures::stream::try_unfold(sending, |mut s| async move {
        let end = s.cut_at.unwrap_or(s.total);
        if s.sent >= end {
            if s.sent < s.total {
                return Err(io::Error::other("body truncated by an injected fault"));
            }
            return Ok(None);
        }
        if s.rate > 0 {
            let due = s.started + Duration::from_secs_f64(s.sent as f64 / s.rate as f64);
            tokio::time::sleep_until(due).await;
        }
        let want = s.chunk.min(end - s.sent);
        let mut buf = vec![0u8; want as usize];
        s.file.read_exact(&mut buf).await?;
        if let Some(at) = s.flip_at.filter(|at| (s.sent..s.sent + want).contains(at)) {
            buf[(at - s.sent) as usize] ^= 0xff;
        }
        s.sent += want;
        Ok(Some((Bytes::from(buf), s)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Range::Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), Range::Part(90, 99));
        assert_eq!(parse_range("bytes=90-200", 100), Range::Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Range::Part(90, 99));
        assert_eq!(parse_range("bytes=-200", 100), Range::Part(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Range::Full);
        assert_eq!(parse_range("bytes=9-3", 100), Range::Full);
        assert_eq!(parse_range("items=0-1", 100), Range::Full);
    }

    #[test]
    fn percent_escapes_decode_and_broken_ones_do_not() {
        assert_eq!(
            percent_decoded("sha256:ab%21out.doi").as_deref(),
            Some("sha256:ab!out.doi")
        );
        assert_eq!(percent_decoded("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decoded("%2").as_deref(), None);
        assert_eq!(percent_decoded("%zz").as_deref(), None);
        assert_eq!(percent_decoded("%+f").as_deref(), None);
        assert_eq!(percent_decoded("%ff").as_deref(), None);
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("/nix-cache-info"), "text/x-nix-cache-info");
        assert_eq!(content_type("/abc.narinfo"), "text/x-nix-narinfo");
        assert_eq!(content_type("/nar/abc.nar.xz"), "application/x-nix-nar");
        assert_eq!(content_type("/abc.ls"), "application/json");
    }
}
