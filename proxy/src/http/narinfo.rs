//! `GET|HEAD /<hash>.narinfo`

use axum::{
    extract::{Path, State},
    http::{header, Method, StatusCode},
    response::{IntoResponse, Response},
};
use nixcache_protocol::{parse_narinfo_name, MIME_NARINFO};

use super::{error, ApiError, AppState};

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
    let text = state.cache.narinfo(&hash).await?;
    if method != Method::HEAD {
        let served = state
            .cache
            .metrics()
            .served_counter(crate::metrics::ObjectKind::Narinfo);
        served.inc_by(text.len() as u64);
    }
    Ok(([(header::CONTENT_TYPE, MIME_NARINFO)], text).into_response())
}
