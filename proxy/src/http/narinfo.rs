//! `GET|HEAD /<hash>.narinfo` (and `/<hash>.ls`, which shares the route, see `side`)

use axum::{
    extract::{Extension, Path, State},
    http::{header, HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
};
use nixcache_protocol::{parse_narinfo_name, MIME_NARINFO};

use super::{caching, error, side, ApiError, AppState, ClientIp};

pub async fn get_narinfo(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    client: Option<Extension<ClientIp>>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    if file.ends_with(".ls") {
        return side::get_listing(&state, &method, &headers, &file).await;
    }
    // `/{file}` matches any top-level name: only *.narinfo (and traversal attempts) are ours to judge.
    if !file.ends_with(".narinfo") && !file.contains("..") && !file.contains('/') {
        return Ok(error::plain(StatusCode::NOT_FOUND, "not found"));
    }
    let hash = parse_narinfo_name(&file).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let interest = ClientIp::interest(&method, client);
    let (text, status) = match state.cache.narinfo(&hash, interest).await {
        Err(err) if err.is_not_found() => {
            return Ok(caching::remembered_miss(state.cache.miss_remembered_for(&hash)))
        }
        found => found?,
    };
    if method != Method::HEAD {
        let served = state
            .cache
            .metrics()
            .served_counter(crate::metrics::ObjectKind::Narinfo);
        served.inc_by(text.len() as u64);
    }
    let len = text.len();
    let mut response = ([(header::CONTENT_TYPE, MIME_NARINFO)], text).into_response();
    caching::narinfo(response.headers_mut(), status);
    state
        .encoders
        .offer(&mut response, &headers, len as u64, method != Method::HEAD);
    Ok(response)
}
