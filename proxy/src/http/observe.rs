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

use crate::metrics::{self, HttpLabels, Metrics, Route, RouteLabels};

/// The route template as a fixed label (`/{file}` serves narinfos and listings: told apart by
/// the path).
fn route_label(matched: Option<&MatchedPath>, path: &str) -> Route {
    match matched.map(MatchedPath::as_str) {
        Some("/") => Route::Landing,
        Some("/nix-cache-info") => Route::NixCacheInfo,
        Some("/pubkey") => Route::Pubkey,
        Some("/healthz") => Route::Healthz,
        Some("/readyz") => Route::Readyz,
        Some("/metrics") => Route::Metrics,
        Some("/status") => Route::Status,
        Some("/nar/{file}") => Route::Nar,
        Some("/{file}") if path.ends_with(".ls") => Route::Listing,
        Some("/{file}") => Route::Narinfo,
        Some("/log/{drv}") => Route::Log,
        Some("/realisations/{id}") => Route::Realisation,
        Some("/build-trace-v2/{drv}/{output}") => Route::BuildTraceV2,
        Some(p) if p.starts_with(crate::cache::replica::FILLS_ROUTE) => Route::Fills,
        Some(super::WARM_ROUTE) => Route::Warm,
        Some(p) if p.starts_with(super::PINS_ROUTE) => Route::Pins,
        _ => Route::Other,
    }
}

fn method_label(method: &Method) -> metrics::Method {
    match *method {
        Method::GET => metrics::Method::Get,
        Method::HEAD => metrics::Method::Head,
        Method::PUT => metrics::Method::Put,
        Method::DELETE => metrics::Method::Delete,
        Method::POST => metrics::Method::Post,
        _ => metrics::Method::Other,
    }
}

pub async fn observe(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_label(request.extensions().get::<MatchedPath>(), request.uri().path());
    let method = method_label(request.method());
    let span = tracing::info_span!(
        target: "nixcache::request",
        "request",
        http.method = method.as_str(),
        http.route = route.as_str(),
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
