//! `GET|HEAD|PUT /realisations/<id>.doi` and `/build-trace-v2/<drv>/<output>.doi`: build traces
//! of content-addressed derivations, answered whole (no ranges: a few hundred bytes) with this
//! cache's signature, and kept by caches in front as briefly as a narinfo.

use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, HeaderMap, HeaderValue, Method},
    response::Response,
};
use nixcache_protocol::{BuildTraceError, BuildTraceKey, MIME_BUILD_TRACE};

use super::{caching, write, ApiError, AppState};
use crate::metrics::ObjectKind;

const KIND: ObjectKind = ObjectKind::BuildTrace;

/// `GET|HEAD /realisations/<id>.doi` (Nix 2.4 to 2.34; `!` arrives as `%21` from 2.32, decoded).
pub async fn get_realisation(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    get(&state, &method, &headers, BuildTraceKey::parse_realisation(&id)).await
}

/// `GET|HEAD /build-trace-v2/<drv>/<output>.doi` (Nix 2.35+).
pub async fn get_v2(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path((drv, output)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    get(&state, &method, &headers, BuildTraceKey::parse_v2(&drv, &output)).await
}

async fn get(
    state: &AppState,
    method: &Method,
    request: &HeaderMap,
    key: Result<BuildTraceKey, BuildTraceError>,
) -> Result<Response, ApiError> {
    let key = key.map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let answer = match state.cache.build_trace(&key).await {
        Err(err) if err.is_not_found() => {
            return Ok(caching::remembered_miss(
                state.cache.trace_miss_remembered_for(&key),
            ))
        }
        answer => answer?,
    };
    let (length, head) = (answer.body.len(), *method == Method::HEAD);
    let body = if head {
        Body::empty()
    } else {
        state.cache.metrics().served_counter(KIND).inc_by(length as u64);
        Body::from(answer.body)
    };
    let mut response = Response::new(body);
    state.encoders.offer(&mut response, request, length as u64, !head);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(MIME_BUILD_TRACE));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    caching::narinfo(headers, answer.status);
    Ok(response)
}

/// `PUT /realisations/<id>.doi`.
pub async fn put_realisation(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    put(&state, &headers, BuildTraceKey::parse_realisation(&id), body).await
}

/// `PUT /build-trace-v2/<drv>/<output>.doi`.
pub async fn put_v2(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((drv, output)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    put(&state, &headers, BuildTraceKey::parse_v2(&drv, &output), body).await
}

async fn put(
    state: &AppState,
    headers: &HeaderMap,
    key: Result<BuildTraceKey, BuildTraceError>,
    body: Body,
) -> Result<Response, ApiError> {
    if let Err(refused) = write::admit(state, write::Verb::Put, KIND, headers).await {
        return Ok(refused);
    }
    let key = key.map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let encoding = write::body_encoding(headers)?;
    let max = state.writes.max_upload_size;
    let outcome = state
        .cache
        .upload_build_trace(&key, encoding, body.into_data_stream(), max)
        .await;
    write::answered(state, KIND, outcome)
}
