//! `GET|HEAD /<hash>.narinfo`

use axum::{
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Response},
};
use nixcache_protocol::{parse_narinfo_name, MIME_NARINFO};

use super::{ApiError, AppState};

pub async fn get_narinfo(
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let hash = parse_narinfo_name(&file).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let text = state.cache.narinfo(&hash).await?;
    Ok(([(header::CONTENT_TYPE, MIME_NARINFO)], text).into_response())
}
