//! `POST /_nixcache/warm` (start warming closures) and `GET /_nixcache/warm` (the running or
//! last warm-up), for a pipeline that bumped nixpkgs; `nixcache warm` is the same walk from the
//! command line. Off unless `--allow-warm`; then it takes an upload credential. The body is
//! store paths, one per line (or separated by blanks); `?narinfos-only` leaves the NARs for
//! clients. Validated whole before anything starts.

use axum::{
    body::Body,
    extract::{RawQuery, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::Response,
};
use nixcache_protocol::{StorePath, StorePathError};

use super::{error, status::json, write, AppState};
use crate::warm::jobs::{WarmJobs, WarmRefused, MAX_PATHS};

/// Route of both verbs.
pub const WARM_ROUTE: &str = "/_nixcache/warm";
/// Largest body: [`MAX_PATHS`] paths of a usual length fit.
pub const MAX_BODY: usize = 2 << 20;
/// Of a path that is not one, this much is echoed.
const ECHOED: usize = 120;

/// What is wrong with a body of store paths.
#[derive(Debug, thiserror::Error)]
enum BadBody {
    #[error("the body is not UTF-8 text")]
    NotText,
    #[error("no store paths: send them in the body, one per line")]
    NoPaths,
    #[error("too many store paths: at most {MAX_PATHS} per request")]
    TooMany,
    /// What is echoed of the path and of why it is none is bounded ([`ECHOED`] characters
    /// each): the answer never grows with what was sent.
    #[error("path {number} ({shown}…): {why} (expected /nix/store/<hash>-<name>, one per line)")]
    NotAPath {
        number: usize,
        shown: String,
        why: String,
    },
}

pub async fn start_warm(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Nothing is read before the credential is checked, the body least of all.
    let jobs = match admit(&state, &headers).await {
        Ok(jobs) => jobs,
        Err(response) => return response,
    };
    let narinfos_only = match narinfos_only(query.as_deref()) {
        Ok(narinfos_only) => narinfos_only,
        Err(why) => return error::plain(StatusCode::BAD_REQUEST, &why),
    };
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        let why = format!("the body must be at most {MAX_BODY} bytes of store paths");
        return error::plain(StatusCode::PAYLOAD_TOO_LARGE, &why);
    };
    let paths = match parse_paths(&body) {
        Ok(paths) => paths,
        Err(why) => return error::plain(StatusCode::BAD_REQUEST, &why.to_string()),
    };
    match jobs.start(paths, narinfos_only) {
        Ok(running) => {
            let mut response = json(StatusCode::ACCEPTED, &running);
            response
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static(WARM_ROUTE));
            response
        }
        Err(refused @ WarmRefused::Running { .. }) => {
            error::plain(StatusCode::CONFLICT, &refused.to_string())
        }
        Err(refused @ WarmRefused::Stopping) => {
            error::plain(StatusCode::SERVICE_UNAVAILABLE, &refused.to_string())
        }
    }
}

pub async fn warm_state(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match admit(&state, &headers).await {
        Ok(jobs) => json(StatusCode::OK, &jobs.state()),
        Err(response) => response,
    }
}

/// 404 while warm-ups are off (the resource does not exist), else the credential check.
async fn admit<'a>(state: &'a AppState, headers: &HeaderMap) -> Result<&'a WarmJobs, Response> {
    let off = "not found: warm-ups over HTTP are off (--allow-warm)";
    let jobs = state.writes.warm.as_ref();
    write::admit_switched(state, jobs.is_some(), off, headers).await?;
    jobs.ok_or_else(|| error::plain(StatusCode::NOT_FOUND, off))
}

/// `?narinfos-only` (or `=true`/`=1`); anything else is refused, so a typo never turns into a
/// whole download.
fn narinfos_only(query: Option<&str>) -> Result<bool, String> {
    let mut narinfos_only = false;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        narinfos_only = match (&*key, &*value) {
            ("narinfos-only", "" | "true" | "1") => true,
            ("narinfos-only", "false" | "0") => false,
            _ => {
                return Err(format!(
                    "unknown query {key:.40}={value:.40}: only narinfos-only is known"
                ))
            }
        };
    }
    Ok(narinfos_only)
}

/// The store paths of a body, all valid, at least one and at most [`MAX_PATHS`].
fn parse_paths(body: &[u8]) -> Result<Vec<StorePath>, BadBody> {
    let text = std::str::from_utf8(body).map_err(|_| BadBody::NotText)?;
    let mut paths = Vec::new();
    for (index, word) in text.split_ascii_whitespace().enumerate() {
        if paths.len() == MAX_PATHS {
            return Err(BadBody::TooMany);
        }
        let path = StorePath::from_absolute(word).map_err(|e: StorePathError| BadBody::NotAPath {
            number: index + 1,
            shown: word.chars().take(ECHOED).collect(),
            why: e.to_string().chars().take(ECHOED).collect(),
        })?;
        paths.push(path);
    }
    if paths.is_empty() {
        return Err(BadBody::NoPaths);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const A: &str = "/nix/store/7h7qgvs4kgzsn8a6rb274saxyqh4jxlz-hello-2.12";

    #[test]
    fn bodies_are_checked_whole() {
        let two = format!("{A}\n  {A}\r\n");
        assert_eq!(parse_paths(two.as_bytes()).unwrap().len(), 2);
        assert!(matches!(parse_paths(b" \n"), Err(BadBody::NoPaths)));
        let bad = format!("{A}\n/nix/store/short-x\n");
        let err = parse_paths(bad.as_bytes()).unwrap_err().to_string();
        assert!(err.starts_with("path 2 (/nix/store/short-x…): "), "{err}");
        assert!(matches!(parse_paths(b"\xff"), Err(BadBody::NotText)));
        let many = format!("{A}\n").repeat(MAX_PATHS + 1);
        assert!(matches!(parse_paths(many.as_bytes()), Err(BadBody::TooMany)));
        let long = format!("/nix/store/{}", "x".repeat(5000));
        let err = parse_paths(long.as_bytes()).unwrap_err().to_string();
        assert!(err.len() < 400, "{err}");
    }

    #[test]
    fn only_narinfos_only_is_a_known_query() {
        assert_eq!(narinfos_only(None), Ok(false));
        assert_eq!(narinfos_only(Some("narinfos-only")), Ok(true));
        assert_eq!(narinfos_only(Some("narinfos-only=1")), Ok(true));
        assert_eq!(narinfos_only(Some("narinfos-only=false")), Ok(false));
        assert!(narinfos_only(Some("narinfo-only"))
            .unwrap_err()
            .contains("narinfo-only"));
        assert!(narinfos_only(Some("narinfos-only=yes")).is_err());
    }
}
