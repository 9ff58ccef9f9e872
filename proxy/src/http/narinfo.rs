//! `GET|HEAD /<hash>.narinfo`

use axum::{
    extract::{Path, State},
    http::{header, Method, StatusCode},
    response::{IntoResponse, Response},
};
use nixcache_protocol::{parse_narinfo_name, StorePathHash, MIME_NARINFO};

use super::{caching, error, ApiError, AppState};

pub async fn get_narinfo(
    State(state): State<AppState>,
    method: Method,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    // `/{file}` matches any top-level name: only *.narinfo (and traversal attempts) are ours to judge.
    if !file.ends_with(".narinfo") && !file.contains("..") && !file.contains('/') {
        return Ok(error::plain(StatusCode::NOT_FOUND, "not found"));
    }
    let hash = parse_narinfo_name(&file).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let (text, status) = match state.cache.narinfo(&hash).await {
        Err(err) if err.is_not_found() => return Ok(remembered_miss(&state, &hash)),
        found => found?,
    };
    if method != Method::HEAD {
        let served = state
            .cache
            .metrics()
            .served_counter(crate::metrics::ObjectKind::Narinfo);
        served.inc_by(text.len() as u64);
    }
    let mut response = ([(header::CONTENT_TYPE, MIME_NARINFO)], text).into_response();
    caching::narinfo(response.headers_mut(), status);
    Ok(response)
}

/// A 404 that caches in front may keep for as long as this cache still remembers the miss.
fn remembered_miss(state: &AppState, hash: &StorePathHash) -> Response {
    let mut response = error::plain(StatusCode::NOT_FOUND, "not found");
    let left = state.cache.miss_remembered_for(hash).unwrap_or_default();
    if let Some(keep) = caching::keep_for(left) {
        response.headers_mut().insert(header::CACHE_CONTROL, keep);
    }
    response
}
