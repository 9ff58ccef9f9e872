//! Prometheus metrics of the operator: reconciliations, failures by error kind, durations,
//! watch errors by watch, and whether this replica leads.

use std::sync::atomic::AtomicI64;
use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::ErrorKind;

/// Label of the failure counter: the error's kind, rendered as [`crate::Error::metric_label`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The error's kind, rendered as its fixed variant name.
    pub error: ErrorKind,
}

/// Label of the watch error counter: the watched resource (plural, e.g. `cronjobs`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    /// The resource.
    pub watch: String,
}

/// How a request for a replica's status ended (the `result` label of
/// `nixcache_operator_status_polls_total`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum PollResult {
    /// Answered with a status.
    Ok,
    /// No answer in time.
    Timeout,
    /// No connection, or it broke.
    Unreachable,
    /// Answered with an HTTP error.
    HttpError,
    /// Answered with something that is not a status (or too long).
    Invalid,
}

impl PollResult {
    /// Every result, for tests.
    pub const ALL: [Self; 5] = [
        Self::Ok,
        Self::Timeout,
        Self::Unreachable,
        Self::HttpError,
        Self::Invalid,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::HttpError => "http_error",
            Self::Invalid => "invalid",
        }
    }
}

impl EncodeLabelValue for PollResult {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.name())
    }
}

/// Label of the status poll counter: how asking a replica for its `/status` ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PollLabels {
    /// `ok`, `timeout`, `unreachable`, `http_error` or `invalid`.
    pub result: PollResult,
}

/// Labels of the replica gauge: which NixCache, and which count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    pub namespace: String,
    pub nixcache: String,
    /// `desired` or `ready`.
    pub state: ReplicaState,
}

/// Which replica count.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ReplicaState {
    Desired,
    Ready,
}

impl EncodeLabelValue for ReplicaState {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        let name = match self {
            ReplicaState::Desired => "desired",
            ReplicaState::Ready => "ready",
        };
        std::fmt::Write::write_str(encoder, name)
    }
}

/// One NixCache's replica counts, as the leader last saw them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaCounts {
    pub namespace: String,
    pub nixcache: String,
    pub desired: i64,
    pub ready: i64,
    /// `spec.gc` is set: a GC is expected to run (in the replicas or as a CronJob).
    pub gc: bool,
}

/// Labels of a per-NixCache gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub namespace: String,
    pub nixcache: String,
}

/// The operator's metrics, registered in their own registry.
#[derive(Debug)]
pub struct Metrics {
    /// Reconciliations started.
    pub reconciliations: Counter,
    /// Reconciliations that failed, by error kind.
    pub failures: Family<ErrorLabels, Counter>,
    /// Duration of reconciliations in seconds.
    pub duration: Histogram,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge<i64, AtomicI64>,
    /// Failed list or watch requests of the controller, by watched resource.
    pub watch_errors: Family<WatchLabels, Counter>,
    /// Replicas asked for their `/status` (for `status.cache`), by result.
    pub status_polls: Family<PollLabels, Counter>,
    /// Every NixCache's desired and ready replicas, while this replica leads (the alert on
    /// replicas not ready reads it; kube-state-metrics knows no NixCache).
    pub replicas: Family<ReplicaLabels, Gauge>,
    /// 1 for every NixCache with `spec.gc`, 0 for the others (the GC alerts read it).
    pub gc_scheduled: Family<CacheLabels, Gauge>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("nixcache_operator");
        let reconciliations = Counter::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        let leader = Gauge::<i64, AtomicI64>::default();
        let watch_errors = Family::<WatchLabels, Counter>::default();
        let status_polls = Family::<PollLabels, Counter>::default();
        let replicas = Family::<ReplicaLabels, Gauge>::default();
        let gc_scheduled = Family::<CacheLabels, Gauge>::default();
        registry.register(
            "reconciliations",
            "Reconciliations started",
            reconciliations.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Failed reconciliations by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciliations",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        registry.register(
            "watch_errors",
            "Failed list or watch requests of the controller, by watched resource",
            watch_errors.clone(),
        );
        registry.register(
            "status_polls",
            "Replicas asked for their /status (for status.cache), by result",
            status_polls.clone(),
        );
        registry.register(
            "replicas",
            "Desired and ready replicas of every NixCache (the leader's, refreshed with status.cache)",
            replicas.clone(),
        );
        registry.register(
            "gc_scheduled",
            "1 for every NixCache whose spec asks for garbage collection, 0 for the others (the leader's)",
            gc_scheduled.clone(),
        );
        Self {
            reconciliations,
            failures,
            duration,
            leader,
            watch_errors,
            status_polls,
            replicas,
            gc_scheduled,
            registry,
        }
    }
}

impl Metrics {
    /// Counts a reconciliation and returns a guard that records its duration when dropped.
    pub fn reconcile_started(&self) -> ReconcileTimer<'_> {
        self.reconciliations.inc();
        ReconcileTimer {
            histogram: &self.duration,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconciliation.
    pub fn reconcile_failed(&self, error: &crate::Error) {
        self.failures
            .get_or_create(&ErrorLabels { error: error.kind() })
            .inc();
    }

    /// Counts a failed list or watch of `watch`.
    pub fn watch_failed(&self, watch: &str) {
        self.watch_errors
            .get_or_create(&WatchLabels {
                watch: watch.to_owned(),
            })
            .inc();
    }

    /// Counts a replica asked for its `/status`.
    pub fn status_polled(&self, result: PollResult) {
        self.status_polls.get_or_create(&PollLabels { result }).inc();
    }

    /// Replaces every NixCache's replica counts and GC flag with `counts` (a NixCache gone is
    /// dropped).
    pub fn set_replicas(&self, counts: &[ReplicaCounts]) {
        self.replicas.clear();
        self.gc_scheduled.clear();
        for c in counts {
            let cache = CacheLabels {
                namespace: c.namespace.clone(),
                nixcache: c.nixcache.clone(),
            };
            self.gc_scheduled.get_or_create(&cache).set(i64::from(c.gc));
            for (state, n) in [(ReplicaState::Desired, c.desired), (ReplicaState::Ready, c.ready)] {
                let labels = ReplicaLabels {
                    namespace: c.namespace.clone(),
                    nixcache: c.nixcache.clone(),
                    state,
                };
                self.replicas.get_or_create(&labels).set(n);
            }
        }
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Records the duration of a reconciliation when dropped.
pub struct ReconcileTimer<'a> {
    histogram: &'a Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_labelled_with_the_error_kinds_name() {
        let metrics = Metrics::default();
        for kind in ErrorKind::ALL {
            metrics.failures.get_or_create(&ErrorLabels { error: kind }).inc();
        }
        let text = metrics.encode();
        for kind in ErrorKind::ALL {
            let line = format!(
                "nixcache_operator_reconcile_failures_total{{error=\"{}\"}} 1\n",
                kind.name()
            );
            assert!(text.contains(&line), "{line:?} in {text}");
        }
    }
}
