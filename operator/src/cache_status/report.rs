//! A replica's `GET /status` answer, as far as the operator reads it.
//!
//! Every field is optional: an older image lacks the newer ones (then the matching
//! `status.cache` fields are left out), and fields the operator does not know are ignored.

use serde::Deserialize;

/// The whole answer.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Report {
    /// The proxy's version.
    pub version: Option<String>,
    /// The key it signs with (`name:base64`).
    pub public_key: Option<String>,
    /// Its upstreams, by priority.
    pub upstreams: Vec<Upstream>,
    /// The cache's figures.
    pub cache: Option<Cache>,
    /// The last GC and fsck (the shared database's).
    pub upkeep: Option<Upkeep>,
}

/// One upstream as this replica sees it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Upstream {
    /// Its URL, credentials removed.
    pub url: String,
    /// `up`, `down` or `unknown`.
    pub state: Option<String>,
    /// When it entered that state (Unix milliseconds).
    pub since_unix_ms: Option<u64>,
    /// Time to the last probe's answer.
    pub probe_latency_ms: Option<f64>,
    /// The last failure, in a few words.
    pub last_error: Option<String>,
}

/// The cache's figures: sizes are the shared database's, counters this replica's.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Cache {
    /// Narinfos (store paths) cached.
    pub narinfos: Option<i64>,
    /// Bytes the NARs take.
    pub size_bytes: Option<i64>,
    /// The GC's limit; `None` without one (or from an older image).
    pub max_size_bytes: Option<i64>,
    /// This replica's last 60 minutes.
    pub last_hour: Option<LastHour>,
}

/// One replica's last hour.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct LastHour {
    /// Lookups served from the cache.
    pub hits: u64,
    /// Lookups fetched from an upstream.
    pub misses: u64,
    /// Bytes sent to clients.
    pub served_bytes: u64,
    /// NAR bytes fetched from upstreams.
    pub fetched_bytes: u64,
}

/// The upkeep runs recorded in the shared database.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Upkeep {
    /// Garbage collection.
    pub gc: Option<UpkeepRun>,
    /// Storage check.
    pub fsck: Option<UpkeepRun>,
}

/// The latest run of one kind of upkeep.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct UpkeepRun {
    /// Runs recorded.
    pub runs: Option<u64>,
    /// Runs that failed.
    pub failures: Option<u64>,
    /// When the latest run started (Unix milliseconds).
    pub last_started_unix_ms: Option<u64>,
    /// When the latest run finished.
    pub last_finished_unix_ms: Option<u64>,
    /// Its result (`ok`, `over_limit`, `error`, `clean`, `repaired`, `problems_left`).
    pub last_result: Option<String>,
    /// When a run last succeeded.
    pub last_ok_unix_ms: Option<u64>,
    /// GC: bytes the latest run freed.
    pub last_freed_bytes: Option<u64>,
    /// fsck: problems the latest run found.
    pub last_problems: Option<u64>,
    /// What the latest run did, in one line.
    pub last_summary: Option<String>,
}

impl UpkeepRun {
    /// When the latest run happened, for picking the newest of several answers.
    pub fn latest_unix_ms(&self) -> u64 {
        self.last_finished_unix_ms
            .max(self.last_started_unix_ms)
            .unwrap_or(0)
    }
}
