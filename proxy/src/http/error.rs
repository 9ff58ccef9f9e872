//! The one place where errors become HTTP statuses. Clients get a fixed one-line message; the
//! internal detail (URLs, paths, SQL) goes to the log only.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

use crate::{
    cache::{CacheError, UploadError},
    pins::PinError,
    storage::StorageError,
    upstream::UpstreamError,
};

#[derive(Debug)]
pub enum ApiError {
    /// Malformed request: answered before any lookup.
    BadRequest(String),
    /// The internal endpoint without a replica's token.
    NotReplica,
    Cache(CacheError),
    Upload(UploadError),
    Pin(PinError),
}

impl From<PinError> for ApiError {
    fn from(e: PinError) -> Self {
        match e {
            PinError::Db(db) => Self::Cache(CacheError::Db(db)),
            other => Self::Pin(other),
        }
    }
}

impl From<CacheError> for ApiError {
    fn from(e: CacheError) -> Self {
        Self::Cache(e)
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Cache(inner) => Self::Cache(inner),
            other => Self::Upload(other),
        }
    }
}

/// Status and client-facing message for a cache error.
fn classify(err: &CacheError) -> (StatusCode, &'static str) {
    match err {
        CacheError::NotFound => (StatusCode::NOT_FOUND, "not found"),
        CacheError::Gone => (
            StatusCode::GONE,
            "gone: this NAR was uploaded to the cache and has been evicted; upload the path again",
        ),
        // Skipped, not asked: 503 with `Retry-After` (the next probe), which Nix retries and
        // never remembers as a miss (a 404 would be kept by clients for an hour).
        CacheError::Upstream(UpstreamError::Down { .. }) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream cache down; ask again later",
        ),
        CacheError::Upstream(e) if e.is_timeout() => {
            (StatusCode::GATEWAY_TIMEOUT, "upstream cache timed out")
        }
        CacheError::Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream cache failed"),
        CacheError::Verification { .. } => (
            StatusCode::BAD_GATEWAY,
            "upstream sent data that failed verification",
        ),
        CacheError::Peer { .. } => (StatusCode::BAD_GATEWAY, "the replica fetching it failed"),
        CacheError::FillFailed(_) => (StatusCode::BAD_GATEWAY, "fetching from the upstream cache failed"),
        CacheError::Storage(StorageError::NoSpace { .. }) => {
            (StatusCode::INSUFFICIENT_STORAGE, "cache storage is full")
        }
        CacheError::Storage(StorageError::NotFound(_)) => (StatusCode::NOT_FOUND, "not found"),
        CacheError::Storage(StorageError::BadRange { .. }) => {
            (StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable")
        }
        // A failing S3 is our own storage, like a failing disk: 503 (502 is kept for upstream
        // caches, so the two stay apart in logs and metrics). Nix retries both.
        CacheError::Storage(StorageError::Io { .. } | StorageError::Backend { .. }) => {
            (StatusCode::SERVICE_UNAVAILABLE, "cache storage unavailable")
        }
        CacheError::Db(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "cache metadata database unavailable",
        ),
        CacheError::RangeNotSatisfiable { .. } => {
            (StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable")
        }
        CacheError::Shared(inner) => classify(inner),
        CacheError::Internal { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        CacheError::Busy { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many downloads in progress; retry later",
        ),
        // Only a request joining a fill at the moment it is cancelled (or another replica's
        // copy of it) sees this.
        CacheError::Abandoned => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the download was cancelled; retry",
        ),
    }
}

/// Whole seconds for `Retry-After`, when the error says when to come back.
fn retry_after(err: &CacheError) -> Option<u64> {
    match err {
        CacheError::Busy { retry_after } => Some(retry_after.as_secs().max(1)),
        CacheError::Upstream(UpstreamError::Down { retry_after, .. }) => Some(retry_after.as_secs().max(1)),
        CacheError::Shared(inner) => retry_after(inner),
        _ => None,
    }
}

fn unsatisfiable_size(err: &CacheError) -> Option<u64> {
    match err {
        CacheError::RangeNotSatisfiable { size } => Some(*size),
        CacheError::Shared(inner) => unsatisfiable_size(inner),
        _ => None,
    }
}

pub fn plain(status: StatusCode, message: &str) -> Response {
    let mut response = (status, format!("{message}\n")).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// 503 with `Retry-After`: a limit of the proxy's own was reached, not anything about the
/// request; Nix retries a 503, and the header tells other clients when to.
pub fn too_busy(message: &str, retry_after_secs: u32) -> Response {
    let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::BadRequest(reason) => plain(StatusCode::BAD_REQUEST, &reason),
            ApiError::NotReplica => {
                tracing::debug!("a request for the internal endpoint without a replica's token");
                plain(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized: for replicas of this cache only",
                )
            }
            // About the client's own upload: the detail is theirs to see.
            ApiError::Upload(err) => {
                let status = match &err {
                    UploadError::Invalid(_) => StatusCode::BAD_REQUEST,
                    UploadError::Conflict(_) => StatusCode::CONFLICT,
                    UploadError::TooLarge { .. } | UploadError::TooLargeDecoded { .. } => {
                        StatusCode::PAYLOAD_TOO_LARGE
                    }
                    UploadError::NotFound => StatusCode::NOT_FOUND,
                    UploadError::TimedOut { .. } => StatusCode::REQUEST_TIMEOUT,
                    UploadError::Cache(inner) => classify(inner).0,
                };
                tracing::info!(status = status.as_u16(), error = %err, "upload refused");
                plain(status, &err.to_string())
            }
            ApiError::Pin(PinError::Db(err)) => ApiError::Cache(CacheError::Db(err)).into_response(),
            ApiError::Pin(err) => {
                let status = match &err {
                    PinError::NotPinned(_) => StatusCode::NOT_FOUND,
                    _ => StatusCode::CONFLICT,
                };
                tracing::info!(status = status.as_u16(), error = %err, "pin refused");
                plain(status, &err.to_string())
            }
            ApiError::Cache(err) => {
                let (status, message) = classify(&err);
                let retry = retry_after(&err);
                // Refusing a fill for load is expected and counted (fills_refused): not an error.
                if status.is_server_error() && retry.is_none() {
                    tracing::error!(status = status.as_u16(), error = %err, "request failed");
                } else {
                    tracing::debug!(status = status.as_u16(), error = %err, "request refused");
                }
                let mut response = plain(status, message);
                if let Some(size) = unsatisfiable_size(&err) {
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                        response.headers_mut().insert(header::CONTENT_RANGE, v);
                    }
                }
                if let Some(seconds) = retry {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                }
                response
            }
        }
    }
}
