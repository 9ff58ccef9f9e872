//! From the replicas' answers to `status.cache` (pure).
//!
//! - Shared figures (size, limit, paths) are the shared database's, the same from any replica:
//!   taken from the youngest replica that reports them (after a rollout, the newest image, which
//!   knows the most fields).
//! - The last hour's hits, misses and bytes are each replica's own, so they are summed; the hit
//!   ratio is computed from the sums (not averaged over replicas).
//! - An upstream is `up` when every replica that has an opinion says up, `down` when every one
//!   says down, `partial` when they disagree (one replica's network, say), `unknown` when none
//!   has probed it yet. Its latency is the slowest replica's last probe: what the unluckiest
//!   client sees. `upstreamHealth` counts the upstreams `up`.
//! - The last GC and fsck come from the shared database too; of several answers the one with
//!   the latest run wins (a replica may have read it just before a run finished).

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use nixcache_crds::{CacheStatus, UpkeepStatus, UpstreamStatus};

use super::report::{LastHour, Report, UpkeepRun, Upstream};

/// One replica's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// When its pod was created (Unix milliseconds), to prefer the youngest for shared figures.
    pub created_unix_ms: i64,
    /// What it said.
    pub report: Report,
}

/// `status.cache` from `answers`, of `asked` replicas, read at `now`. `None` when none answered:
/// the last figures then stand.
pub fn cache_status(asked: usize, answers: &[Answer], now: &Time) -> Option<CacheStatus> {
    if answers.is_empty() {
        return None;
    }
    let mut order: Vec<&Answer> = answers.iter().collect();
    order.sort_by_key(|a| std::cmp::Reverse(a.created_unix_ms));
    let newest_first: Vec<&Report> = order.iter().map(|a| &a.report).collect();

    let shared = newest_first
        .iter()
        .find_map(|r| r.cache.as_ref().filter(|c| c.size_bytes.is_some()));
    let size_bytes = shared.and_then(|c| c.size_bytes);
    let max_size_bytes = shared.and_then(|c| c.max_size_bytes);
    let paths = newest_first
        .iter()
        .find_map(|r| r.cache.as_ref().and_then(|c| c.narinfos));
    let last_hour = sum_last_hour(&newest_first);
    let upstreams = upstreams(&newest_first);
    let up = upstreams.iter().filter(|u| u.state == UP).count();
    let upkeep = |pick: fn(&Report) -> Option<&UpkeepRun>, kind| {
        newest_first
            .iter()
            .filter_map(|r| pick(r))
            .max_by_key(|run| run.latest_unix_ms())
            .map(|run| upkeep_status(run, kind))
    };
    Some(CacheStatus {
        observed_at: Some(now.clone()),
        replicas_polled: count(asked),
        replicas_answered: count(answers.len()),
        size: size_bytes.map(|size| size_text(size, max_size_bytes)),
        size_bytes,
        max_size_bytes,
        paths,
        hit_ratio_last_hour: last_hour.and_then(|h| hit_ratio(h.hits, h.misses)),
        hits_last_hour: last_hour.map(|h| signed(h.hits)),
        misses_last_hour: last_hour.map(|h| signed(h.misses)),
        served_bytes_last_hour: last_hour.map(|h| signed(h.served_bytes)),
        fetched_bytes_last_hour: last_hour.map(|h| signed(h.fetched_bytes)),
        upstream_health: (!upstreams.is_empty()).then(|| format!("{up}/{} up", upstreams.len())),
        upstreams,
        last_gc: upkeep(|r| r.upkeep.as_ref()?.gc.as_ref(), Upkeep::Gc),
        last_fsck: upkeep(|r| r.upkeep.as_ref()?.fsck.as_ref(), Upkeep::Fsck),
    })
}

/// The last hour summed over the replicas that report it; `None` when none does.
fn sum_last_hour(reports: &[&Report]) -> Option<LastHour> {
    reports
        .iter()
        .filter_map(|r| r.cache.as_ref()?.last_hour)
        .reduce(|a, b| LastHour {
            hits: a.hits.saturating_add(b.hits),
            misses: a.misses.saturating_add(b.misses),
            served_bytes: a.served_bytes.saturating_add(b.served_bytes),
            fetched_bytes: a.fetched_bytes.saturating_add(b.fetched_bytes),
        })
}

const UP: &str = "up";
const DOWN: &str = "down";
const PARTIAL: &str = "partial";
const UNKNOWN: &str = "unknown";

/// Each upstream (by URL, in the first report's order) merged over the replicas.
fn upstreams(reports: &[&Report]) -> Vec<UpstreamStatus> {
    let mut order: Vec<&str> = Vec::new();
    let mut seen: BTreeMap<&str, Vec<&Upstream>> = BTreeMap::new();
    for upstream in reports.iter().flat_map(|r| &r.upstreams) {
        let views = seen.entry(upstream.url.as_str()).or_default();
        if views.is_empty() {
            order.push(upstream.url.as_str());
        }
        views.push(upstream);
    }
    order
        .into_iter()
        .map(|url| merge_upstream(url, seen.get(url).map(Vec::as_slice).unwrap_or_default()))
        .collect()
}

fn merge_upstream(url: &str, views: &[&Upstream]) -> UpstreamStatus {
    let says = |state: &str| views.iter().any(|v| v.state.as_deref() == Some(state));
    let state = match (says(UP), says(DOWN)) {
        (true, true) => PARTIAL,
        (true, false) => UP,
        (false, true) => DOWN,
        (false, false) => UNKNOWN,
    };
    let latency = views
        .iter()
        .filter_map(|v| v.probe_latency_ms)
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .reduce(f64::max);
    let last_error = (state != UP)
        .then(|| {
            let failing = views.iter().filter(|v| v.state.as_deref() != Some(UP));
            failing.filter_map(|v| v.last_error.clone()).next()
        })
        .flatten();
    UpstreamStatus {
        url: url.to_owned(),
        state: state.to_owned(),
        since: views.iter().filter_map(|v| v.since_unix_ms).max().and_then(time),
        // Rounded up: a probe that took 0.3 ms did take time.
        latency_ms: latency.map(|ms| ms.ceil() as i64),
        last_error,
    }
}

/// Which upkeep a run is: GC reports bytes freed, fsck problems found.
#[derive(Clone, Copy)]
enum Upkeep {
    Gc,
    Fsck,
}

fn upkeep_status(run: &UpkeepRun, kind: Upkeep) -> UpkeepStatus {
    UpkeepStatus {
        finished_at: run.last_finished_unix_ms.and_then(time),
        result: run.last_result.clone().unwrap_or_else(|| UNKNOWN.to_owned()),
        summary: run.last_summary.clone(),
        freed_bytes: matches!(kind, Upkeep::Gc)
            .then_some(run.last_freed_bytes)
            .flatten()
            .map(signed),
        problems: matches!(kind, Upkeep::Fsck)
            .then_some(run.last_problems)
            .flatten()
            .map(signed),
        last_success_at: run.last_ok_unix_ms.and_then(time),
        runs: run.runs.map(signed),
        failures: run.failures.map(signed),
    }
}

/// `hits / (hits + misses)` as a whole percentage, rounded down (so `100%` means no miss at
/// all); `None` without lookups.
pub fn hit_ratio(hits: u64, misses: u64) -> Option<String> {
    let total = u128::from(hits) + u128::from(misses);
    (total > 0).then(|| format!("{}%", u128::from(hits) * 100 / total))
}

/// `1.2 GiB / 10 GiB`, or `1.2 GiB` without a limit.
pub fn size_text(size: i64, max: Option<i64>) -> String {
    match max {
        Some(max) => format!("{} / {}", bytes_text(size), bytes_text(max)),
        None => bytes_text(size),
    }
}

/// Bytes in binary units with at most one decimal: `512 B`, `1.5 KiB`, `10 GiB`, `123 MiB`.
pub fn bytes_text(bytes: i64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let bytes = bytes.max(0);
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let text = if unit == 0 || value >= 99.95 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    };
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {}", UNITS[unit])
}

/// A Unix time in milliseconds as an API time.
fn time(unix_ms: u64) -> Option<Time> {
    let ms = i64::try_from(unix_ms).ok()?;
    k8s_openapi::jiff::Timestamp::from_millisecond(ms).ok().map(Time)
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
