//! `PUT` and `DELETE` of narinfos and NARs, for `nix copy --to http://…` (listings and logs are
//! `side`'s): off unless enabled
//! (405), and then only with a credential (401; 503 when too many are being checked to tell).

use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use nixcache_formats::content_encoding::{decode_limited, ContentEncoding};
use nixcache_protocol::{parse_narinfo_name, NarFile};

use super::{
    write::{admit, stored, Verb},
    ApiError, AppState,
};
use crate::metrics::{ObjectKind, UploadResult};

/// Largest narinfo accepted (real ones are a few KiB).
const MAX_NARINFO_BYTES: usize = 1 << 20;

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
    if file.ends_with(".ls") {
        return super::side::put_listing(&state, &headers, &file, body).await;
    }
    if let Err(refused) = admit(&state, Verb::Put, ObjectKind::Narinfo, &headers).await {
        return Ok(refused);
    }
    let hash = parse_narinfo_name(&file).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // Nix 2.32+ with `narinfo-compression` sends it encoded.
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?"));
    let encoding = ContentEncoding::parse(encoding).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let too_big = || ApiError::BadRequest(format!("a narinfo must be under {MAX_NARINFO_BYTES} bytes"));
    let bytes = axum::body::to_bytes(body, MAX_NARINFO_BYTES)
        .await
        .map_err(|_| too_big())?;
    let bytes = decode_limited(encoding, &bytes, MAX_NARINFO_BYTES)
        .map_err(|e| ApiError::BadRequest(format!("the narinfo's {} encoding: {e}", encoding.as_str())))?;
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
