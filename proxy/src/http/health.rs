//! `/healthz` (the process answers) and `/readyz` (metadata and storage answer) for Kubernetes
//! probes. Migrations need no check here: `serve` refuses to start on a database that lacks one.

use axum::{extract::State, http::StatusCode, response::Response};

use super::{error::plain, AppState};
use crate::cache::CacheError;

pub async fn healthz() -> Response {
    plain(StatusCode::OK, "ok")
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_draining() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "not ready: shutting down");
    }
    match state.cache.ping().await {
        Ok(()) => plain(StatusCode::OK, "ready"),
        Err(err) => {
            tracing::warn!(error = %err, "not ready");
            let what = match err {
                CacheError::Db(_) => "not ready: metadata database unreachable",
                CacheError::Storage(_) => "not ready: storage unreachable",
                _ => "not ready",
            };
            plain(StatusCode::SERVICE_UNAVAILABLE, what)
        }
    }
}
