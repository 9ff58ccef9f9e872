//! Who may write: the checks every `PUT` and `DELETE` passes first (405 while the verb is off,
//! 401 without an accepted credential, 503 when too many are being checked to tell), and the
//! answer to an accepted one.

use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::Response,
};

use nixcache_formats::content_encoding::ContentEncoding;

use super::{error, ApiError, AppState, UploadAuth};
use crate::{
    cache::{CacheError, Stored, UploadError},
    metrics::{ObjectKind, UploadResult},
};

#[derive(Clone, Copy)]
pub(super) enum Verb {
    Put,
    Delete,
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
        (Some(auth), true) => auth,
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
    authenticate(auth, headers).await.map_err(|refusal| {
        let result = match refusal {
            Refusal::Busy => UploadResult::Busy,
            Refusal::Unauthorized => UploadResult::Unauthorized,
        };
        state.cache.metrics().upload(kind, result);
        refusal.into_response()
    })
}

/// Why a request that needs a credential was refused.
#[derive(Clone, Copy, Debug)]
pub(super) enum Refusal {
    /// Too many credentials being checked to tell in time (503).
    Busy,
    /// No credential, or a wrong one (401).
    Unauthorized,
}

impl Refusal {
    pub(super) fn into_response(self) -> Response {
        match self {
            Refusal::Busy => error::too_busy("too many credential checks at once: try again shortly", 1),
            Refusal::Unauthorized => {
                let mut response = error::plain(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized: a valid credential is required",
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"nixcache\", charset=\"UTF-8\""),
                );
                response
            }
        }
    }
}

/// Whether `headers` carry a credential `auth` accepts.
pub(super) async fn authenticate(auth: &UploadAuth, headers: &HeaderMap) -> Result<(), Refusal> {
    match auth.allows(headers).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Refusal::Unauthorized),
        Err(busy) => {
            tracing::debug!(error = %busy, "refused: credentials could not be checked in time");
            Err(Refusal::Busy)
        }
    }
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
