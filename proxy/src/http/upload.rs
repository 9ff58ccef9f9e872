//! `PUT` and `DELETE` of narinfos and NARs, for `nix copy --to http://…`: off unless enabled
//! (405), and then only with a credential (401; 503 when too many are being checked to tell).

use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use nixcache_protocol::{parse_narinfo_name, NarFile};

use super::{error, ApiError, AppState};
use crate::{
    cache::Stored,
    metrics::{ObjectKind, UploadResult},
};

/// Largest narinfo accepted (real ones are a few KiB).
const MAX_NARINFO_BYTES: usize = 1 << 20;

#[derive(Clone, Copy)]
enum Verb {
    Put,
    Delete,
}

/// 405 when the verb is off, 401 without an accepted credential.
async fn admit(state: &AppState, verb: Verb, kind: ObjectKind, headers: &HeaderMap) -> Result<(), Response> {
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

fn stored(state: &AppState, kind: ObjectKind, outcome: Stored) -> Response {
    let (status, result) = match outcome {
        Stored::Created => (StatusCode::CREATED, UploadResult::Stored),
        Stored::Exists => (StatusCode::OK, UploadResult::Exists),
    };
    state.cache.metrics().upload(kind, result);
    error::plain(status, result.as_str())
}

fn nar_name(file: &str) -> Result<NarFile, ApiError> {
    NarFile::parse(file).map_err(|e| ApiError::BadRequest(e.to_string()))
}

pub async fn put_nar(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(file): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    if let Err(refused) = admit(&state, Verb::Put, ObjectKind::Nar, &headers).await {
        return Ok(refused);
    }
    let file = nar_name(&file)?;
    let outcome = state
        .cache
        .upload_nar(&file, body.into_data_stream(), state.writes.max_upload_size)
        .await
        .inspect_err(|_| {
            state
                .cache
                .metrics()
                .upload(ObjectKind::Nar, UploadResult::Rejected)
        })?;
    Ok(stored(&state, ObjectKind::Nar, outcome))
}

pub async fn put_narinfo(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(file): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    if let Err(refused) = admit(&state, Verb::Put, ObjectKind::Narinfo, &headers).await {
        return Ok(refused);
    }
    let hash = parse_narinfo_name(&file).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let bytes = axum::body::to_bytes(body, MAX_NARINFO_BYTES)
        .await
        .map_err(|_| ApiError::BadRequest(format!("a narinfo must be under {MAX_NARINFO_BYTES} bytes")))?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| ApiError::BadRequest("a narinfo is UTF-8 text".into()))?;
    let outcome = state.cache.upload_narinfo(&hash, text).await.inspect_err(|_| {
        state
            .cache
            .metrics()
            .upload(ObjectKind::Narinfo, UploadResult::Rejected)
    })?;
    Ok(stored(&state, ObjectKind::Narinfo, outcome))
}

pub async fn delete_nar(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    if let Err(refused) = admit(&state, Verb::Delete, ObjectKind::Nar, &headers).await {
        return Ok(refused);
    }
    state.cache.delete_uploaded_nar(&nar_name(&file)?).await?;
    state
        .cache
        .metrics()
        .upload(ObjectKind::Nar, UploadResult::Deleted);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn delete_narinfo(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    if let Err(refused) = admit(&state, Verb::Delete, ObjectKind::Narinfo, &headers).await {
        return Ok(refused);
    }
    let hash = parse_narinfo_name(&file).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    state.cache.delete_uploaded_narinfo(&hash).await?;
    state
        .cache
        .metrics()
        .upload(ObjectKind::Narinfo, UploadResult::Deleted);
    Ok(StatusCode::NO_CONTENT.into_response())
}
