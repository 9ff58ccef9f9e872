//! Per request: the `request` span (method, route, status, duration, cache outcome) and the
//! request metrics. The span's target is `nixcache::request`: off in the default log filter (an
//! access log line per hit costs more than the hit); `RUST_LOG=info,nixcache::request=debug`
//! logs a `served` line per request. Always exported when OTLP tracing is configured.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::Method,
    middleware::Next,
    response::Response,
};
use tracing::{field::Empty, Instrument};

use crate::metrics::{HttpLabels, Metrics, RouteLabels};

/// The route template as a fixed label.
fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    match matched.map(MatchedPath::as_str) {
        Some("/nix-cache-info") => "/nix-cache-info",
        Some("/pubkey") => "/pubkey",
        Some("/healthz") => "/healthz",
        Some("/readyz") => "/readyz",
        Some("/metrics") => "/metrics",
        Some("/nar/{file}") => "/nar/{file}",
        Some("/{file}") => "/{hash}.narinfo",
        Some(p) if p.starts_with(crate::cache::replica::FILLS_ROUTE) => "/_nixcache/fills/{file}",
        _ => "other",
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::POST => "POST",
        _ => "other",
    }
}

pub async fn observe(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_label(request.extensions().get::<MatchedPath>());
    let method = method_label(request.method());
    let span = tracing::info_span!(
        target: "nixcache::request",
        "request",
        http.method = method,
        http.route = route,
        http.status = Empty,
        duration_ms = Empty,
        cache = Empty,
    );
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let took = started.elapsed();
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route,
            method,
            status,
        })
        .inc();
    metrics
        .http_duration
        .get_or_create(&RouteLabels { route })
        .observe(took.as_secs_f64());
    if !span.is_disabled() {
        span.record("http.status", status);
        span.record("duration_ms", took.as_secs_f64() * 1000.0);
        tracing::debug!(target: "nixcache::request", parent: &span, "served");
    }
    response
}
