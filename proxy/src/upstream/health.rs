//! Whether each upstream answers, judged by a probe of its nix-cache-info on a schedule and by
//! the real requests sent to it, so that lookups skip an upstream that is down instead of waiting
//! for its timeout on every miss. A probe that gets an answer brings it back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

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
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
}

#[derive(Debug)]
struct Tracked {
    state: UpstreamState,
    since: SystemTime,
    failures_in_a_row: u32,
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
    pub last_error: Option<String>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            tracked: Mutex::new(Tracked {
                state: UpstreamState::Unknown,
                since: SystemTime::now(),
                failures_in_a_row: 0,
                probe_latency: None,
                probed_at: None,
                last_error: None,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }
}

impl Health {
    pub fn state(&self) -> UpstreamState {
        self.with(|t| t.state)
    }

    pub fn is_down(&self) -> bool {
        self.state() == UpstreamState::Down
    }

    /// A probe got an answer after `latency` (any HTTP answer below 500: the upstream is there).
    pub fn probe_answered(&self, latency: Duration) -> Option<Change> {
        self.with(|t| {
            t.probe_latency = Some(latency);
            t.probed_at = Some(SystemTime::now());
            t.failures_in_a_row = 0;
            t.set(UpstreamState::Up)
        })
    }

    /// A probe got no answer (or a 5xx): down at once.
    pub fn probe_failed(&self, error: &UpstreamError) -> Option<Change> {
        self.with(|t| {
            t.probed_at = Some(SystemTime::now());
            t.last_error = Some(error.to_string());
            t.set(UpstreamState::Down)
        })
    }

    /// A lookup or download got an HTTP answer from it.
    pub fn request_answered(&self) -> Option<Change> {
        self.with(|t| {
            t.failures_in_a_row = 0;
            t.set(UpstreamState::Up)
        })
    }

    /// A lookup or download failed. Only failures that say the upstream is not there count
    /// towards marking it down (no answer, a timeout, a 5xx), not a malformed or refused answer.
    pub fn request_failed(&self, error: &UpstreamError) -> Option<Change> {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if !error.means_unavailable() {
            return None;
        }
        self.with(|t| {
            t.last_error = Some(error.to_string());
            t.failures_in_a_row = t.failures_in_a_row.saturating_add(1);
            if t.failures_in_a_row >= FAILURES_TO_DOWN {
                t.set(UpstreamState::Down)
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
        let (state, since, latency, probed_at, last_error) = self.with(|t| {
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

    fn with<T>(&self, f: impl FnOnce(&mut Tracked) -> T) -> T {
        let mut tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut tracked)
    }
}

impl Tracked {
    fn set(&mut self, to: UpstreamState) -> Option<Change> {
        let from = self.state;
        if from == to {
            return None;
        }
        self.state = to;
        self.since = SystemTime::now();
        Some(Change { from, to })
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
        let health = Health::default();
        assert_eq!(health.state(), UpstreamState::Unknown);
        let down = health.probe_failed(&unreachable());
        assert_eq!(down.map(|c| c.to), Some(UpstreamState::Down));
        assert!(health.is_down());
        assert_eq!(
            health.probe_failed(&unreachable()),
            None,
            "no change, no log line"
        );
        let up = health.probe_answered(Duration::from_millis(3));
        assert_eq!(
            up,
            Some(Change {
                from: UpstreamState::Down,
                to: UpstreamState::Up
            })
        );
        let report = health.report();
        assert_eq!(report.state, UpstreamState::Up);
        assert_eq!(report.probe_latency_ms, Some(3.0));
        assert!(report.last_error.is_some_and(|e| e.contains("upstream.test")));
    }

    #[test]
    fn three_unavailable_requests_in_a_row_mark_down_but_a_bad_answer_does_not() {
        let health = Health::default();
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
