//! The HTTP edge of the binary cache protocol: parse and validate, call the cache, respond.

mod error;
mod health;
mod info;
mod nar;
mod narinfo;

use std::sync::Arc;

use axum::{
    http::{StatusCode, Uri},
    response::Response,
    routing::get,
    Router,
};

use crate::cache::{replica::FILLS_ROUTE, Cache};
pub use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub cache: Cache,
    /// The rendered /nix-cache-info body.
    pub cache_info: Arc<str>,
}

/// The whole HTTP API; tests call this directly.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/nix-cache-info", get(info::cache_info))
        .route("/pubkey", get(info::pubkey))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/nar/{file}", get(nar::get_nar))
        .route(&format!("{FILLS_ROUTE}/{{file}}"), get(nar::get_fill))
        .route("/{file}", get(narinfo::get_narinfo))
        .fallback(fallback)
        .with_state(state)
}

/// Anything that looks like a cache object but did not match is malformed (400); the rest is 404.
async fn fallback(uri: Uri) -> Response {
    let path = uri.path();
    let lowered = path.to_ascii_lowercase();
    if path.starts_with("/nar/")
        || path.ends_with(".narinfo")
        || lowered.contains("..")
        || lowered.contains("%2f")
        || lowered.contains("%2e")
    {
        return error::plain(
            StatusCode::BAD_REQUEST,
            "invalid path: expected /<hash>.narinfo or /nar/<filehash>.nar[.xz|.zst|.bz2]",
        );
    }
    error::plain(StatusCode::NOT_FOUND, "not found")
}
