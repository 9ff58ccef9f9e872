//! HTTP caching headers, so a CDN or an nginx in front of the cache (and clients) keep what may
//! be kept: NAR files never change under their name; narinfos may (an upload replaced, GC), so
//! they are kept briefly; a narinfo 404 as long as the cache itself remembers the miss. And
//! `X-Cache-Status`, for people and tools looking at what the cache did.

use std::time::Duration;

use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use nixcache_protocol::{NarFile, SideFile};

use crate::cache::CacheStatus;

/// A NAR file's bytes are fixed by its name for as long as it is stored.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// How long a narinfo may be served from a cache in front (five minutes); a static value, as
/// it goes out with every narinfo hit.
const NARINFO_KEPT: &str = "public, max-age=300";

/// The headers of a narinfo answer.
pub fn narinfo(headers: &mut HeaderMap, status: CacheStatus) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(NARINFO_KEPT));
    cache_status(headers, status);
}

/// Where the answer came from: `HIT`, `MISS` or `JOINED` (a download already under way).
pub const CACHE_STATUS: &str = "x-cache-status";

pub fn cache_status(headers: &mut HeaderMap, status: CacheStatus) {
    headers.insert(CACHE_STATUS, HeaderValue::from_static(status.as_str()));
}

/// A NAR file's entity tag: `"<its name>"`. Strong when the name fixes the bytes (it is the
/// FileHash); weak when it fixes only the NAR they decompress to (another download of it may
/// be compressed otherwise), so no cache in front splices ranges of two such copies.
pub fn nar_etag(file: &NarFile, fixed_by_name: bool) -> HeaderValue {
    let weak = if fixed_by_name { "" } else { "W/" };
    // A file name is nixbase32 and an extension: always a valid header value.
    HeaderValue::from_str(&format!("{weak}\"{}\"", file.file_name()))
        .unwrap_or(HeaderValue::from_static("W/\"\""))
}

/// Whether the request's `If-None-Match` lists `file`'s tag, strong or weak (compared weakly,
/// as RFC 9110 asks for this header), or is `*`.
pub fn none_match_hits(headers: &HeaderMap, file: &NarFile) -> bool {
    none_match_lists(headers, &file.file_name())
}

/// Whether `If-None-Match` lists the tag `"<name>"` (strong or weak) or is `*`.
fn none_match_lists(headers: &HeaderMap, name: &str) -> bool {
    let ours = format!("\"{name}\"");
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
}

/// The headers of a NAR file's answer (200, 206 or 304).
pub fn immutable(headers: &mut HeaderMap, etag: HeaderValue) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    headers.insert(header::ETAG, etag);
}

/// `304 Not Modified` for a NAR file the client has.
pub fn not_modified(etag: HeaderValue) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    immutable(response.headers_mut(), etag);
    response
}

/// A listing or log's entity tag: `W/"<its path>"`. Weak: a copy fetched again (after GC, from
/// another upstream) holds the same listing or log, not always the same bytes.
fn side_etag(file: &SideFile) -> HeaderValue {
    // Store path hashes and names are header-safe characters.
    HeaderValue::from_str(&format!("W/\"{file}\"")).unwrap_or(HeaderValue::from_static("W/\"\""))
}

/// Whether the request's `If-None-Match` lists `file`'s tag (or is `*`).
pub fn side_none_match_hits(headers: &HeaderMap, file: &SideFile) -> bool {
    none_match_lists(headers, &file.to_string())
}

/// The headers of a listing's or log's answer: a listing is fixed by its store path, as the NAR
/// is; a log is kept briefly, as a narinfo (another upload may come after a GC).
pub fn side_file(headers: &mut HeaderMap, file: &SideFile) {
    let kept = match file {
        SideFile::Listing(_) => IMMUTABLE,
        SideFile::Log(_) => NARINFO_KEPT,
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(kept));
    headers.insert(header::ETAG, side_etag(file));
}

/// `304 Not Modified` for a listing or log the client has.
pub fn not_modified_side(file: &SideFile) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    side_file(response.headers_mut(), file);
    response
}

/// A `404` that caches in front may keep for as long as this cache still remembers the miss
/// (`left`; nothing said when it does not).
pub fn remembered_miss(left: Option<Duration>) -> Response {
    let mut response = super::error::plain(StatusCode::NOT_FOUND, "not found");
    if let Some(keep) = keep_for(left.unwrap_or_default()) {
        response.headers_mut().insert(header::CACHE_CONTROL, keep);
    }
    response
}

/// `Cache-Control` for something kept for `max_age`; `None` for zero (then nothing is said, and
/// the default of each answer holds).
pub fn keep_for(max_age: Duration) -> Option<HeaderValue> {
    let secs = max_age.as_secs();
    (secs > 0)
        .then(|| HeaderValue::from_str(&format!("public, max-age={secs}")).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn nar_file() -> NarFile {
        NarFile::parse(&format!("{}.nar.xz", "1".repeat(52))).unwrap()
    }

    #[test]
    fn if_none_match_lists_weak_and_star() {
        let (file, name) = (nar_file(), nar_file().file_name());
        assert!(none_match_hits(&with(&format!("\"{name}\"")), &file));
        assert!(none_match_hits(&with(&format!("\"x\", W/\"{name}\"")), &file));
        assert!(none_match_hits(&with("*"), &file));
        assert!(!none_match_hits(&with("\"other.nar\""), &file));
        assert!(
            !none_match_hits(&with(&name), &file),
            "an unquoted tag is not ours"
        );
        assert!(!none_match_hits(&HeaderMap::new(), &file));
    }

    #[test]
    fn a_name_that_does_not_fix_the_bytes_is_a_weak_tag() {
        let (file, name) = (nar_file(), nar_file().file_name());
        assert_eq!(nar_etag(&file, true), format!("\"{name}\"").as_str());
        assert_eq!(nar_etag(&file, false), format!("W/\"{name}\"").as_str());
    }

    #[test]
    fn keep_for_says_nothing_for_zero() {
        assert_eq!(keep_for(Duration::ZERO), None);
        assert_eq!(keep_for(Duration::from_secs(90)).unwrap(), "public, max-age=90");
    }
}
