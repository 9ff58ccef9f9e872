//! `/nix-cache-info` and `/pubkey`.

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use nixcache_protocol::MIME_CACHE_INFO;

use super::AppState;

pub async fn cache_info(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, MIME_CACHE_INFO)],
        state.cache_info.to_string(),
    )
        .into_response()
}

pub async fn pubkey(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain")],
        format!("{}\n", state.cache.public_key()),
    )
        .into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    if state.metrics_elsewhere {
        return super::error::plain(
            axum::http::StatusCode::NOT_FOUND,
            "not found: /metrics is served on --metrics-listen",
        );
    }
    render_metrics(&state)
}

/// `/metrics` on the `--metrics-listen` listener.
pub async fn metrics_listener(State(state): State<AppState>) -> Response {
    render_metrics(&state)
}

fn render_metrics(state: &AppState) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.cache.metrics().render(),
    )
        .into_response()
}
