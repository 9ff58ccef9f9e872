//! Whether each upstream answers, judged by a probe of its nix-cache-info on a schedule and by
//! the real requests sent to it, so that lookups skip an upstream that is down instead of waiting
//! for its timeout on every miss. A probe that gets an answer brings it back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;

use super::UpstreamError;

/// Failed requests in a row that mark an upstream down without waiting for its next probe.
const FAILURES_TO_DOWN: u32 = 3;

/// An upstream's state as lookups see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamState {
    /// Not probed yet: asked like one that is up.
    Unknown,
    Up,
    /// Skipped by lookups until a probe gets an answer.
    Down,
}

/// A change of state, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub from: UpstreamState,
    pub to: UpstreamState,
}

/// One upstream's health and what it answered; shared by lookups, probes and `/status`.
#[derive(Debug)]
pub struct Health {
    tracked: Mutex<Tracked>,
    /// `nixcache_upstream_up` of this upstream, set under the same lock as the state.
    up: Gauge,
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
}

#[derive(Debug)]
struct Tracked {
    state: UpstreamState,
    since: SystemTime,
    failures_in_a_row: u32,
    /// When a request or probe last got an answer: a probe that fails after it started proves
    /// nothing the answer did not disprove.
    answered_at: Option<Instant>,
    probe_latency: Option<Duration>,
    probed_at: Option<SystemTime>,
    last_error: Option<String>,
}

/// What `/status` shows of one upstream.
#[derive(Clone, Debug, Serialize)]
pub struct HealthReport {
    pub state: UpstreamState,
    /// When it entered that state (Unix milliseconds).
    pub since_unix_ms: u64,
    /// Time to the last probe's answer, when it got one.
    pub probe_latency_ms: Option<f64>,
    pub probed_unix_ms: Option<u64>,
    /// Narinfo lookups it answered with a verified narinfo, with none, and requests that failed.
    pub hits: u64,
    pub misses: u64,
    pub errors: u64,
    /// What the last failure was, in a few words (`timeout`, `HTTP 503`, …): no addresses.
    pub last_error: Option<String>,
}

impl Health {
    /// Unknown until the first answer or failure; `up` is its `nixcache_upstream_up` gauge.
    pub fn new(up: Gauge) -> Self {
        Health {
            up,
            tracked: Mutex::new(Tracked {
                state: UpstreamState::Unknown,
                since: SystemTime::now(),
                failures_in_a_row: 0,
                answered_at: None,
                probe_latency: None,
                probed_at: None,
                last_error: None,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> UpstreamState {
        self.with(|t, _| t.state)
    }

    pub fn is_down(&self) -> bool {
        self.state() == UpstreamState::Down
    }

    /// A probe got an answer after `latency` (any HTTP answer below 500: the upstream is there).
    pub fn probe_answered(&self, latency: Duration) -> Option<Change> {
        self.with(|t, up| {
            t.probe_latency = Some(latency);
            t.probed_at = Some(SystemTime::now());
            t.answered(up)
        })
    }

    /// A probe that started at `started` got no answer (or a 5xx): down at once, unless a
    /// request got an answer meanwhile.
    pub fn probe_failed(&self, started: Instant, error: &UpstreamError) -> Option<Change> {
        self.with(|t, up| {
            t.probed_at = Some(SystemTime::now());
            t.last_error = Some(short(error));
            if t.answered_at.is_some_and(|at| at > started) {
                return None;
            }
            t.set(UpstreamState::Down, up)
        })
    }

    /// A lookup or download got an HTTP answer from it.
    pub fn request_answered(&self) -> Option<Change> {
        self.with(|t, up| t.answered(up))
    }

    /// A lookup or download failed. Only failures that say the upstream is not there count
    /// towards marking it down (no answer, a timeout, a 5xx), not a malformed or refused answer.
    pub fn request_failed(&self, error: &UpstreamError) -> Option<Change> {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if !error.means_unavailable() {
            return None;
        }
        self.with(|t, up| {
            t.last_error = Some(short(error));
            t.failures_in_a_row = t.failures_in_a_row.saturating_add(1);
            if t.failures_in_a_row >= FAILURES_TO_DOWN {
                t.set(UpstreamState::Down, up)
            } else {
                None
            }
        })
    }

    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    pub fn report(&self) -> HealthReport {
        let (state, since, latency, probed_at, last_error) = self.with(|t, _| {
            (
                t.state,
                t.since,
                t.probe_latency,
                t.probed_at,
                t.last_error.clone(),
            )
        });
        HealthReport {
            state,
            since_unix_ms: unix_ms(since),
            probe_latency_ms: latency.map(|d| d.as_secs_f64() * 1000.0),
            probed_unix_ms: probed_at.map(unix_ms),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            last_error,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Tracked, &Gauge) -> T) -> T {
        let mut tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut tracked, &self.up)
    }
}

impl Tracked {
    fn answered(&mut self, up: &Gauge) -> Option<Change> {
        self.failures_in_a_row = 0;
        self.answered_at = Some(Instant::now());
        self.set(UpstreamState::Up, up)
    }

    /// Changes the state and its gauge together (under the caller's lock).
    fn set(&mut self, to: UpstreamState, up: &Gauge) -> Option<Change> {
        let from = self.state;
        if from == to {
            return None;
        }
        self.state = to;
        self.since = SystemTime::now();
        up.set(i64::from(to == UpstreamState::Up));
        Some(Change { from, to })
    }
}

/// A failure in a few words for `/status`, which anyone reaching the cache can read: the
/// error's kind, never its text (that names addresses, redirect targets, resolver details).
fn short(error: &UpstreamError) -> String {
    match error {
        UpstreamError::Status { status, .. } => format!("HTTP {status}"),
        _ if error.is_timeout() => "timeout".into(),
        UpstreamError::Request { error, .. } if error.is_connect() => "connection failed".into(),
        _ => error.reason().as_str().into(),
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> UpstreamError {
        UpstreamError::Timeout {
            url: "http://upstream.test/x.narinfo".into(),
            after: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_failed_probe_marks_down_and_an_answered_one_brings_it_back() {
        let gauge = Gauge::default();
        let health = Health::new(gauge.clone());
        assert_eq!(health.state(), UpstreamState::Unknown);
        let down = health.probe_failed(Instant::now(), &unreachable());
        assert_eq!(down.map(|c| c.to), Some(UpstreamState::Down));
        assert!(health.is_down());
        assert_eq!(gauge.get(), 0);
        let again = health.probe_failed(Instant::now(), &unreachable());
        assert_eq!(again, None, "no change, no log line");
        let back = health.probe_answered(Duration::from_millis(3));
        let expected = Change {
            from: UpstreamState::Down,
            to: UpstreamState::Up,
        };
        assert_eq!(back, Some(expected));
        assert_eq!(gauge.get(), 1);
        let report = health.report();
        assert_eq!(report.state, UpstreamState::Up);
        assert_eq!(report.probe_latency_ms, Some(3.0));
        assert_eq!(report.last_error.as_deref(), Some("timeout"), "no URL in it");
    }

    #[test]
    fn a_probe_failing_after_a_request_got_an_answer_changes_nothing() {
        let health = Health::new(Gauge::default());
        let probe_started = Instant::now();
        health.request_answered();
        assert_eq!(health.probe_failed(probe_started, &unreachable()), None);
        assert_eq!(health.state(), UpstreamState::Up);
        let down = health.probe_failed(Instant::now(), &unreachable());
        assert_eq!(down.map(|c| c.to), Some(UpstreamState::Down));
    }

    #[test]
    fn three_unavailable_requests_in_a_row_mark_down_but_a_bad_answer_does_not() {
        let health = Health::new(Gauge::default());
        let invalid = UpstreamError::Invalid {
            url: "http://upstream.test/x.narinfo".into(),
            reason: "malformed narinfo".into(),
        };
        for _ in 0..5 {
            assert_eq!(health.request_failed(&invalid), None);
        }
        assert_eq!(health.request_failed(&unreachable()), None);
        assert_eq!(health.request_failed(&unreachable()), None);
        health.request_answered();
        assert_eq!(
            health.request_failed(&unreachable()),
            None,
            "the answer reset the count"
        );
        assert_eq!(health.request_failed(&unreachable()), None);
        let down = health.request_failed(&unreachable());
        assert_eq!(down.map(|c| c.to), Some(UpstreamState::Down));
        assert_eq!(health.report().errors, 10);
    }
}
