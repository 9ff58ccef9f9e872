//! `GET /status`: the cache at a glance, as JSON, for people and dashboards: each upstream's
//! health, probe latency and answers, and this replica's view of the cache's size and hit ratio.
//! Counters are this process's (since it started, and over the last hour); sizes, the limit and
//! what GC and fsck runs recorded are the shared database's (read every minute), the same on
//! every replica. The operator reads it into the NixCache's status.

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use super::AppState;
use crate::db::{UpkeepKind, UpkeepRecord};
use crate::metrics::{LookupLabels, LookupResult, Metrics, ObjectKind, Totals};
use crate::upstream::HealthReport;

#[derive(Serialize)]
struct Status {
    version: &'static str,
    public_key: String,
    /// False while shutting down (as `/readyz` says); upstreams being down never makes it false.
    ready: bool,
    upstreams: Vec<UpstreamStatus>,
    cache: CacheSummary,
    upkeep: Upkeep,
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
    /// `null`: no limit known (no `--max-size`, and no GC run recorded one).
    max_size_bytes: Option<u64>,
    narinfo: Lookups,
    nar: Lookups,
    /// Hits over hits and misses, narinfos and NARs together; `null` before the first.
    hit_ratio: Option<f64>,
    served_bytes: u64,
    /// NAR bytes received from upstreams.
    fetched_bytes: u64,
    last_hour: Totals,
}

/// The last recorded run of each kind; `null`: none yet.
#[derive(Serialize)]
struct Upkeep {
    gc: Option<UpkeepStatus>,
    fsck: Option<UpkeepStatus>,
}

#[derive(Serialize)]
struct UpkeepStatus {
    runs: u64,
    failures: u64,
    /// Over every recorded run.
    freed_bytes: u64,
    last_started_unix_ms: i64,
    last_finished_unix_ms: i64,
    last_result: &'static str,
    last_ok_unix_ms: Option<i64>,
    last_freed_bytes: u64,
    last_problems: u64,
    last_summary: String,
}

impl From<UpkeepRecord> for UpkeepStatus {
    fn from(r: UpkeepRecord) -> Self {
        UpkeepStatus {
            runs: r.runs,
            failures: r.failures,
            freed_bytes: r.freed_bytes,
            last_started_unix_ms: r.last.started_at.unix_ms(),
            last_finished_unix_ms: r.last.finished_at.unix_ms(),
            last_result: r.last.result,
            last_ok_unix_ms: r.last_ok_at.map(|t| t.unix_ms()),
            last_freed_bytes: r.last.freed_bytes,
            last_problems: r.last.problems,
            last_summary: r.last.summary,
        }
    }
}

fn upkeep(metrics: &Metrics) -> Upkeep {
    let records = metrics.upkeep.records();
    let of = |kind| {
        records
            .iter()
            .find(|r| r.last.kind == kind)
            .cloned()
            .map(UpkeepStatus::from)
    };
    Upkeep {
        gc: of(UpkeepKind::Gc),
        fsck: of(UpkeepKind::Fsck),
    }
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
    let totals = metrics.totals();
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
            max_size_bytes: metrics.max_size(),
            hit_ratio: (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
            served_bytes: totals.served_bytes,
            fetched_bytes: totals.fetched_bytes,
            last_hour: metrics.last_hour(),
        },
        upkeep: upkeep(metrics),
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
