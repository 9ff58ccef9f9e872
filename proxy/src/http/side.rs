//! `GET|HEAD|PUT /<hash>.ls` (NAR listings) and `/log/<drv>` (build logs). Answered as stored,
//! decoded, unless the request asks for an encoding (`encoding`: Nix 2.8 asks for none and
//! decodes only `br` itself); uploads may come encoded (Nix 2.32+ `ls-compression`,
//! `log-compression`).

use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    response::Response,
};
use nixcache_formats::range::RangeSpec;
use nixcache_protocol::SideFile;

use super::{caching, encoding, write, ApiError, AppState};
use crate::{cache::SideResponse, upstream::object_kind};

/// `GET|HEAD /log/<drv>`.
pub async fn get_log(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(drv): Path<String>,
) -> Result<Response, ApiError> {
    let file = SideFile::parse_log(&drv).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    get(&state, &method, &headers, file).await
}

/// `GET|HEAD /<hash>.ls` (routed here by the top-level handler).
pub async fn get_listing(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    name: &str,
) -> Result<Response, ApiError> {
    let file = SideFile::parse_listing(name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    get(state, method, headers, file).await
}

async fn get(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    file: SideFile,
) -> Result<Response, ApiError> {
    if caching::side_none_match_hits(headers, &file) {
        if let Some(size) = state.cache.side_file_revalidated(&file).await? {
            let mut response = caching::not_modified_side(&file);
            state.encoders.not_modified(&mut response, headers, size);
            return Ok(response);
        }
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(RangeSpec::parse);
    let answer = match state.cache.side_file(&file, range, *method == Method::HEAD).await {
        Err(err) if err.is_not_found() => {
            return Ok(caching::remembered_miss(
                state.cache.side_miss_remembered_for(&file),
            ))
        }
        answer => answer?,
    };
    if let Some(len) = answer
        .body
        .as_ref()
        .map(|_| answer.range.map_or(answer.size, |r| r.len()))
    {
        state
            .cache
            .metrics()
            .served_counter(object_kind(&file))
            .inc_by(len);
    }
    let (whole, size, status) = (
        answer.body.is_some() && answer.range.is_none(),
        answer.size,
        answer.status,
    );
    let mut response = respond(&file, answer);
    caching::side_file(response.headers_mut(), &file);
    state.encoders.offer(&mut response, headers, size, whole);
    caching::cache_status(response.headers_mut(), status);
    Ok(response)
}

fn respond(file: &SideFile, answer: SideResponse) -> Response {
    let (status, length, content_range) = match answer.range {
        Some(r) => (
            StatusCode::PARTIAL_CONTENT,
            r.len(),
            Some(format!("bytes {}-{}/{}", r.start, r.end, answer.size)),
        ),
        None => (StatusCode::OK, answer.size, None),
    };
    let body = answer.body.map(encoding::fused);
    let mut response = Response::new(body.map_or_else(Body::empty, Body::from_stream));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(file.mime()));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(v) = content_range.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::CONTENT_RANGE, v);
    }
    response
}

/// `PUT /log/<drv>`.
pub async fn put_log(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(drv): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    put(&state, &headers, SideFile::parse_log(&drv), body).await
}

/// `PUT /<hash>.ls` (routed here by the top-level handler).
pub async fn put_listing(
    state: &AppState,
    headers: &HeaderMap,
    name: &str,
    body: Body,
) -> Result<Response, ApiError> {
    put(state, headers, SideFile::parse_listing(name), body).await
}

async fn put(
    state: &AppState,
    headers: &HeaderMap,
    file: Result<SideFile, nixcache_protocol::SideFileError>,
    body: Body,
) -> Result<Response, ApiError> {
    let kind = match &file {
        Ok(file) => object_kind(file),
        Err(nixcache_protocol::SideFileError::InvalidListingName) => crate::metrics::ObjectKind::Listing,
        Err(nixcache_protocol::SideFileError::InvalidLogName) => crate::metrics::ObjectKind::Log,
    };
    if let Err(refused) = write::admit(state, write::Verb::Put, kind, headers).await {
        return Ok(refused);
    }
    let file = file.map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let encoding = write::body_encoding(headers)?;
    let max = state.writes.max_upload_size;
    let outcome = state
        .cache
        .upload_side_file(&file, encoding, body.into_data_stream(), max)
        .await;
    write::answered(state, kind, outcome)
}
