//! Who may write: the checks every `PUT` and `DELETE` passes first (405 while the verb is off,
//! 401 without an accepted credential, 503 when too many are being checked to tell), and the
//! answer to an accepted one.

use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::Response,
};

use super::{error, AppState};
use crate::{
    cache::Stored,
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
    match auth.allows(headers).await {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        Err(busy) => {
            tracing::debug!(error = %busy, "upload refused: credentials could not be checked in time");
            state.cache.metrics().upload(kind, UploadResult::Busy);
            return Err(error::too_busy(
                "too many credential checks at once: try again shortly",
                1,
            ));
        }
    }
    state.cache.metrics().upload(kind, UploadResult::Unauthorized);
    let mut response = error::plain(
        StatusCode::UNAUTHORIZED,
        "unauthorized: a valid credential is required",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"nixcache\", charset=\"UTF-8\""),
    );
    Err(response)
}

pub(super) fn stored(state: &AppState, kind: ObjectKind, outcome: Stored) -> Response {
    let (status, result) = match outcome {
        Stored::Created => (StatusCode::CREATED, UploadResult::Stored),
        Stored::Exists => (StatusCode::OK, UploadResult::Exists),
    };
    state.cache.metrics().upload(kind, result);
    error::plain(status, result.as_str())
}
