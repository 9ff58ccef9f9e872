//! `GET /status`: the cache at a glance, as JSON, for people and dashboards: each upstream's
//! health, probe latency and answers, and this replica's view of the cache's size and hit ratio.
//! Counters are this process's since it started; sizes are the shared metadata's.

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use super::AppState;
use crate::metrics::{LookupLabels, LookupResult, Metrics, ObjectKind};
use crate::upstream::HealthReport;

#[derive(Serialize)]
struct Status {
    version: &'static str,
    public_key: String,
    /// False while shutting down (as `/readyz` says); upstreams being down never makes it false.
    ready: bool,
    upstreams: Vec<UpstreamStatus>,
    cache: CacheSummary,
}

#[derive(Serialize)]
struct UpstreamStatus {
    url: String,
    priority: u32,
    #[serde(flatten)]
    health: HealthReport,
}

#[derive(Serialize)]
struct CacheSummary {
    narinfos: i64,
    nars: i64,
    size_bytes: i64,
    narinfo: Lookups,
    nar: Lookups,
    /// Hits over hits and misses, narinfos and NARs together; `null` before the first.
    hit_ratio: Option<f64>,
}

#[derive(Serialize)]
struct Lookups {
    hits: u64,
    /// Fetched from an upstream (or another replica's download).
    misses: u64,
    not_found: u64,
}

pub async fn status(State(state): State<AppState>) -> Response {
    let cache = &state.cache;
    let metrics = cache.metrics();
    let upstreams = cache
        .upstreams()
        .list()
        .iter()
        .map(|u| UpstreamStatus {
            url: crate::redact::url(u.url()),
            priority: u.priority(),
            health: u.health().report(),
        })
        .collect();
    let (narinfo, nar) = (
        lookups(metrics, ObjectKind::Narinfo),
        lookups(metrics, ObjectKind::Nar),
    );
    let (hits, misses) = (narinfo.hits + nar.hits, narinfo.misses + nar.misses);
    let status = Status {
        version: env!("CARGO_PKG_VERSION"),
        public_key: cache.public_key().to_owned(),
        ready: !state.is_draining(),
        upstreams,
        cache: CacheSummary {
            narinfos: metrics.narinfos.get(),
            nars: metrics.nars.get(),
            size_bytes: metrics.size_bytes.get(),
            narinfo,
            nar,
            hit_ratio: (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
        },
    };
    json(StatusCode::OK, &status)
}

/// A JSON body, indented for a person reading it with curl.
pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_string_pretty(value) {
        Ok(json) => (status, [(header::CONTENT_TYPE, "application/json")], json + "\n").into_response(),
        Err(e) => super::error::plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot render JSON: {e}"),
        ),
    }
}

fn lookups(metrics: &Metrics, kind: ObjectKind) -> Lookups {
    // Read, never created: asking the status must not add series to /metrics.
    let count = |result| {
        let labels = LookupLabels { kind, result };
        metrics.lookups.get(&labels).map_or(0, |c| c.get())
    };
    Lookups {
        hits: count(LookupResult::Hit),
        misses: count(LookupResult::Miss),
        not_found: count(LookupResult::NotFound),
    }
}
