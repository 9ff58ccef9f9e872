//! `GET|HEAD /nar/<filehash>.nar[.xz|.zst|.bz2]`: streamed, with single-range support, immutable
//! for caches in front (`If-None-Match` answered with `304`).

use axum::{
    body::Body,
    extract::{Extension, Path, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    response::Response,
};
use nixcache_formats::range::RangeSpec;
use nixcache_protocol::{Compression, NarFile, MIME_NAR};

use super::{caching, encoding::fused, ApiError, AppState, ClientIp};
use crate::{
    cache::{CacheStatus, NarResponse},
    storage::StorageError,
};

pub async fn get_nar(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    client: Option<Extension<ClientIp>>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let (file, range, _) = parse(&file, &headers, &method)?;
    if caching::none_match_hits(&headers, &file) {
        // Only for a NAR this cache has or can fetch (an unknown one stays a 404); a look that
        // starts no download.
        if let Some(known) = state.cache.nar_known(&file).await? {
            let etag = caching::nar_etag(&file, known.fixed_by_name);
            let mut response = caching::not_modified(etag);
            if file.compression == Compression::None {
                state.encoders.not_modified(&mut response, &headers, known.size);
            }
            return Ok(response);
        }
    }
    let interest = ClientIp::interest(&method, client);
    let mut nar = state.cache.nar(&file, range, interest).await?;
    if let Some(url) = nar.redirect.take() {
        return redirect(url, nar.status);
    }
    nar.body = nar.body.map(|body| counted(&state, body));
    let (status, etag) = (nar.status, caching::nar_etag(&file, nar.fixed_by_name));
    // A NAR stored without compression is worth encoding for a client that takes it.
    let whole = nar.body.is_some() && nar.range.is_none();
    let size = nar.size;
    let mut response = respond(nar);
    caching::immutable(response.headers_mut(), etag);
    if file.compression == Compression::None {
        state.encoders.offer(&mut response, &headers, size, whole);
    }
    caching::cache_status(response.headers_mut(), status);
    Ok(response)
}

/// `307` to the object in the bucket (`--s3-redirect`): the client repeats its GET there, with
/// its Range header. Not to be stored by caches in front: the URL expires.
fn redirect(url: String, status: CacheStatus) -> Result<Response, ApiError> {
    let location = HeaderValue::try_from(url).map_err(|e| {
        let error = StorageError::Backend {
            context: "presigning a NAR's URL".into(),
            error: Box::new(e),
        };
        ApiError::Cache(error.into())
    })?;
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    caching::cache_status(headers, status);
    Ok(response)
}

/// Counts the bytes as they go out.
fn counted(state: &AppState, body: crate::storage::ByteStream) -> crate::storage::ByteStream {
    use futures::StreamExt;
    let served = state
        .cache
        .metrics()
        .served_counter(crate::metrics::ObjectKind::Nar);
    Box::pin(body.inspect(move |chunk| {
        if let Ok(bytes) = chunk {
            served.inc_by(bytes.len() as u64);
        }
    }))
}

/// `GET|HEAD /_nixcache/fills/<file>`: another replica streams this replica's fetch in progress.
/// 404 when there is none; it never starts a fetch. Only replicas may ask (401 otherwise): the
/// bytes are not verified yet, and it answers for any file being fetched.
pub async fn get_fill(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !state.cache.is_replica(authorization) {
        return Err(ApiError::NotReplica);
    }
    let (file, range, head) = parse(&file, &headers, &method)?;
    Ok(respond(state.cache.local_fill(&file, range, head).await?))
}

/// The file named, the range asked for, and whether only the headers are wanted.
fn parse(
    file: &str,
    headers: &HeaderMap,
    method: &Method,
) -> Result<(NarFile, Option<RangeSpec>, bool), ApiError> {
    let file = NarFile::parse(file).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(RangeSpec::parse);
    Ok((file, range, *method == Method::HEAD))
}

fn respond(nar: NarResponse) -> Response {
    let (status, length, content_range) = match nar.range {
        Some(r) => (
            StatusCode::PARTIAL_CONTENT,
            r.len(),
            Some(format!("bytes {}-{}/{}", r.start, r.end, nar.size)),
        ),
        None => (StatusCode::OK, nar.size, None),
    };
    let body = nar.body.map_or_else(Body::empty, |b| Body::from_stream(fused(b)));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(MIME_NAR));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(v) = content_range.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::CONTENT_RANGE, v);
    }
    response
}
