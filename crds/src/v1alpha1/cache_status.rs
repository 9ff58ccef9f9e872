//! `status.cache`: what the replicas report about the cache (their `GET /status`), written by
//! the operator's status poller under a field manager of its own.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// What the replicas report about the cache (see `status.cache`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CacheStatus {
    /// When the replicas were asked and answered with these figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Time>,
    /// Ready replicas asked.
    #[serde(default)]
    pub replicas_polled: i32,
    /// Replicas that answered; the per-replica figures (hits, bytes) are their sum.
    #[serde(default)]
    pub replicas_answered: i32,
    /// The NARs' size and the GC's limit, e.g. `1.2 GiB / 10 GiB` (just the size without a limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Bytes the cached NARs take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// The size the GC keeps the cache under (`spec.gc.maxSize`); absent without a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size_bytes: Option<i64>,
    /// Store paths cached (narinfos).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<i64>,
    /// Share of narinfo and NAR lookups served from the cache in the last hour, e.g. `92%`;
    /// absent when there was none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hit_ratio_last_hour: Option<String>,
    /// Lookups served from the cache in the last hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hits_last_hour: Option<i64>,
    /// Lookups fetched from an upstream in the last hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misses_last_hour: Option<i64>,
    /// Bytes sent to clients in the last hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_bytes_last_hour: Option<i64>,
    /// NAR bytes fetched from upstreams in the last hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_bytes_last_hour: Option<i64>,
    /// Upstreams up of all, e.g. `2/2 up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_health: Option<String>,
    /// Each upstream, in the replicas' order (by priority).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<UpstreamStatus>,
    /// The latest garbage collection (absent: none ran yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_gc: Option<UpkeepStatus>,
    /// The latest storage check (absent: none ran yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fsck: Option<UpkeepStatus>,
}

/// One upstream as the replicas see it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamStatus {
    /// The upstream's URL (credentials removed).
    pub url: String,
    /// `up` (every replica that knows says so), `down` (every one), `partial` (some up, some
    /// down) or `unknown` (not asked yet).
    pub state: String,
    /// Since when it is in that state (the replica that saw the change last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// The slowest replica's last probe, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<i64>,
    /// The last failure, in a few words (`timeout`, `HTTP 503`), while it is not up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The latest run of a garbage collection or a storage check.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpkeepStatus {
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// GC: `ok`, `over_limit` (it ran, but what it may not evict takes more than the limit) or
    /// `error`; fsck: `clean`, `repaired`, `problems_left` or `error`.
    pub result: String,
    /// What it did, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// GC: bytes it freed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freed_bytes: Option<i64>,
    /// fsck: problems it found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems: Option<i64>,
    /// When a run last succeeded (absent: never), for when the latest failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<Time>,
    /// Runs recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<i64>,
    /// Runs that failed, of `runs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<i64>,
}
