//! Who may write: the checks every `PUT` and `DELETE` passes first (405 while the verb is off,
//! 401 without an accepted credential, 403 with a read-only one, 503 when too many are being
//! checked to tell), and the answer to an accepted one.

use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::Response,
};

use nixcache_formats::content_encoding::ContentEncoding;

use super::{
    auth::{Grant, Refusal},
    error, ApiError, AppState,
};
use crate::{
    cache::{CacheError, Stored, UploadError},
    metrics::{ObjectKind, UploadResult},
};

#[derive(Clone, Copy)]
pub(super) enum Verb {
    Put,
    Delete,
}

/// For an endpoint that exists only when switched on (warm-ups, pins): 404 saying so (`off`)
/// while it is off, else the check of a write credential.
pub(super) async fn admit_switched(
    state: &AppState,
    on: bool,
    off: &str,
    headers: &HeaderMap,
) -> Result<(), Response> {
    let (true, Some(auth)) = (on, &state.writes.auth) else {
        return Err(error::plain(StatusCode::NOT_FOUND, off));
    };
    auth.require(headers, Grant::Write)
        .await
        .map_err(Refusal::into_response)
}

/// 405 when the verb is off, 401 without an accepted credential.
pub(super) async fn admit(
    state: &AppState,
    verb: Verb,
    kind: ObjectKind,
    headers: &HeaderMap,
) -> Result<(), Response> {
    let enabled = match verb {
        Verb::Put => state.writes.put,
        Verb::Delete => state.writes.delete,
    };
    let auth = match (&state.writes.auth, enabled) {
        (Some(auth), true) if auth.writable() => auth,
        _ => {
            let mut response = error::plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: uploads are off (--allow-put / --allow-delete)",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Err(response);
        }
    };
    auth.require(headers, Grant::Write).await.map_err(|refusal| {
        let result = match refusal {
            Refusal::Busy => UploadResult::Busy,
            Refusal::Unauthorized | Refusal::ReadOnly => UploadResult::Unauthorized,
        };
        state.cache.metrics().upload(kind, result);
        refusal.into_response()
    })
}

/// The body's `Content-Encoding` (none, or one the cache decodes); `400` for any other.
pub(super) fn body_encoding(headers: &HeaderMap) -> Result<ContentEncoding, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?"));
    ContentEncoding::parse(encoding).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// The answer to an upload: counted, then `201`/`200`, or the error (counted as busy or
/// rejected).
pub(super) fn answered(
    state: &AppState,
    kind: ObjectKind,
    outcome: Result<Stored, UploadError>,
) -> Result<Response, ApiError> {
    match outcome {
        Ok(stored) => Ok(self::stored(state, kind, stored)),
        Err(err) => {
            let result = match err {
                UploadError::Cache(CacheError::Busy { .. }) => UploadResult::Busy,
                _ => UploadResult::Rejected,
            };
            state.cache.metrics().upload(kind, result);
            Err(err.into())
        }
    }
}

pub(super) fn stored(state: &AppState, kind: ObjectKind, outcome: Stored) -> Response {
    let (status, result) = match outcome {
        Stored::Created => (StatusCode::CREATED, UploadResult::Stored),
        Stored::Exists => (StatusCode::OK, UploadResult::Exists),
    };
    state.cache.metrics().upload(kind, result);
    error::plain(status, result.as_str())
}
