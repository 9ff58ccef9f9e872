//! Prometheus metrics (`GET /metrics`, text format). Labels are bounded: route templates, kinds,
//! results, configured upstream URLs and error classes, never object names.

use std::{fmt::Write as _, time::Duration};

mod fsck;
mod labels;
mod prefetch;
mod recent;
mod register;
mod series;
mod upkeep;

use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

pub use labels::{
    ConnectionClosed, Encoding, EncodingLabels, FillLimit, FsckProblem, FsckProblemLabels, FsckResult,
    FsckResultLabels, GcKind, GcLabels, GcResult, HttpLabels, KeptLabels, KeptReason, KindLabels,
    LimitLabels, LookupLabels, LookupResult, Method, ObjectKind, PrefetchOutcome, PrefetchOutcomeLabels,
    PrefetchSkip, ReasonLabels, Route, RouteLabels, SkipLabels, UpkeepKindLabel, UpkeepLabels, UpkeepResult,
    UpkeepResultLabels, UploadLabels, UploadResult, UpstreamErrorLabels, UpstreamFailure, UpstreamLabels,
    UpstreamLookupLabels, UpstreamLookupResult, UpstreamNameLabels,
};

pub use fsck::FsckMetrics;
pub use prefetch::PrefetchMetrics;
pub use recent::{RecentTotals, Totals};
pub use upkeep::UpkeepMetrics;

use crate::db::Usage;

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs … ~55 s.
    Histogram::new(exponential_buckets(0.0001, 2.5, 15))
}

/// Every metric of the proxy; cloned handles share their values.
pub struct Metrics {
    registry: Registry,
    /// The name of every series the registered metrics may expose.
    series: Vec<String>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Histograms<RouteLabels>,
    pub lookups: Family<LookupLabels, Counter>,
    pub served_bytes: Family<KindLabels, Counter>,
    pub upstream_duration: Histograms<UpstreamLabels>,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    /// 1 while an upstream answers its probes and requests, 0 while lookups skip it.
    pub upstream_up: Family<UpstreamNameLabels, Gauge>,
    /// Narinfo lookups each upstream answered, with the narinfo or without.
    pub upstream_lookups: Family<UpstreamLookupLabels, Counter>,
    /// NAR bytes received from each upstream.
    pub upstream_fetched: Family<UpstreamLabels, Counter>,
    /// All of `upstream_fetched` (not exported: for `totals`).
    fetched_total: Counter,
    pub fills_in_flight: Gauge,
    /// Misses waiting for room to start their fill (a few seconds at most, then refused).
    pub fills_waiting: Gauge,
    /// Requests that joined a lookup or download already under way instead of starting one.
    pub coalesced: Family<KindLabels, Counter>,
    pub size_bytes: Gauge,
    pub nars: Gauge,
    pub narinfos: Gauge,
    pub gc_runs: Family<GcLabels, Counter>,
    pub gc_evictions: Family<KindLabels, Counter>,
    pub gc_freed_bytes: Counter,
    pub gc_duration: Histogram,
    /// Entries GC would have evicted but kept: pinned, or uploaded under --gc-keep-uploads.
    pub gc_kept: Family<KeptLabels, Counter>,
    /// Cached paths the pins held at the last GC run.
    pub gc_pinned_paths: Gauge,
    pub uploads: Family<UploadLabels, Counter>,
    pub scrubbed_bytes: Counter,
    pub scrub_dropped: Counter,
    /// Fills refused with 503, by the limit they ran into.
    pub fills_refused: Family<LimitLabels, Counter>,
    /// Fills cancelled because every client left.
    pub fills_abandoned: Counter,
    /// Bytes written to the temp files of fills in progress.
    pub fill_temp_bytes: Gauge,
    /// The most the fills in progress may write: what `--max-fill-bytes` bounds.
    pub fill_reserved_bytes: Gauge,
    /// Client connections open (the probes-only reserve included).
    pub connections_open: Gauge,
    pub connections_closed: Family<ReasonLabels, Counter>,
    /// Connections past --max-connections, which answer only the health endpoints.
    pub connections_probes_only: Counter,
    /// bcrypt checks running (at most `auth::BCRYPT_AT_ONCE`).
    pub auth_hashes_in_flight: Gauge,
    /// Answers sent with a `Content-Encoding`, by encoding.
    pub encoded_responses: Family<EncodingLabels, Counter>,
    /// Answers that would have been encoded but went as stored, every encoder being busy.
    pub encoders_busy: Counter,
    pub prefetch: PrefetchMetrics,
    pub hot_tier: crate::storage::HotTierMetrics,
    pub fsck: FsckMetrics,
    /// What GC and fsck runs recorded in the database.
    pub upkeep: UpkeepMetrics,
    /// This process's totals over the last hour.
    recent: RecentTotals,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("nixcache"),
            series: Vec::new(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            lookups: Family::default(),
            served_bytes: Family::default(),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            upstream_errors: Family::default(),
            upstream_up: Family::default(),
            upstream_lookups: Family::default(),
            upstream_fetched: Family::default(),
            fetched_total: Counter::default(),
            fills_in_flight: Gauge::default(),
            fills_waiting: Gauge::default(),
            coalesced: Family::default(),
            size_bytes: Gauge::default(),
            nars: Gauge::default(),
            narinfos: Gauge::default(),
            gc_runs: Family::default(),
            gc_evictions: Family::default(),
            gc_freed_bytes: Counter::default(),
            gc_duration: latency_histogram(),
            gc_kept: Family::default(),
            gc_pinned_paths: Gauge::default(),
            uploads: Family::default(),
            scrubbed_bytes: Counter::default(),
            scrub_dropped: Counter::default(),
            fills_refused: Family::default(),
            fills_abandoned: Counter::default(),
            fill_temp_bytes: Gauge::default(),
            fill_reserved_bytes: Gauge::default(),
            connections_open: Gauge::default(),
            connections_closed: Family::default(),
            connections_probes_only: Counter::default(),
            auth_hashes_in_flight: Gauge::default(),
            encoded_responses: Family::default(),
            encoders_busy: Counter::default(),
            prefetch: PrefetchMetrics::default(),
            hot_tier: Default::default(),
            fsck: FsckMetrics::default(),
            upkeep: UpkeepMetrics::default(),
            recent: RecentTotals::default(),
        };
        m.register();
        m.start_at_zero();
        m
    }

    /// The series of what every cache does, at 0 from the start: a series that appears at its
    /// first count hides that count from `rate()` and `increase()` (its first sample is all
    /// Prometheus knows), and a ratio of absent series shows nothing.
    fn start_at_zero(&self) {
        for kind in [ObjectKind::Narinfo, ObjectKind::Nar] {
            for result in [LookupResult::Hit, LookupResult::Miss, LookupResult::NotFound] {
                let _ = self.lookups.get_or_create(&LookupLabels { kind, result });
            }
            let _ = self.served_bytes.get_or_create(&KindLabels { kind });
            let _ = self.coalesced.get_or_create(&KindLabels { kind });
        }
        for limit in [FillLimit::Fills, FillLimit::Bytes] {
            let _ = self.fills_refused.get_or_create(&LimitLabels { limit });
        }
    }

    /// An upstream's per-upstream series at 0 (see [`Self::start_at_zero`]).
    pub fn upstream_at_zero(&self, upstream: &str) {
        for result in [UpstreamLookupResult::Hit, UpstreamLookupResult::Miss] {
            let labels = UpstreamLookupLabels {
                upstream: upstream.to_owned(),
                result,
            };
            let _ = self.upstream_lookups.get_or_create(&labels);
        }
        let labels = UpstreamLabels {
            upstream: upstream.to_owned(),
            kind: ObjectKind::Nar,
        };
        let _ = self.upstream_fetched.get_or_create(&labels);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 << 10);
        if encode(&mut out, &self.registry).is_err() {
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }

    /// The name of every series `/metrics` may show (a family shows none until it has a child).
    pub fn series_names(&self) -> &[String] {
        &self.series
    }

    pub fn lookup(&self, kind: ObjectKind, result: LookupResult) {
        self.lookups.get_or_create(&LookupLabels { kind, result }).inc();
    }

    pub fn coalesced(&self, kind: ObjectKind) {
        self.coalesced_counter(kind).inc();
    }

    /// The waiters-coalesced counter of `kind`, for code that counts without a `Metrics`.
    pub fn coalesced_counter(&self, kind: ObjectKind) -> Counter {
        self.coalesced.get_or_create(&KindLabels { kind }).clone()
    }

    /// The bytes-served counter of `kind`, to be counted as a body goes out.
    pub fn served_counter(&self, kind: ObjectKind) -> Counter {
        self.served_bytes.get_or_create(&KindLabels { kind }).clone()
    }

    pub fn upstream_request(&self, upstream: &str, kind: ObjectKind, took: Duration) {
        let labels = UpstreamLabels {
            upstream: upstream.to_owned(),
            kind,
        };
        self.upstream_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn upstream_error(&self, upstream: &str, kind: ObjectKind, reason: UpstreamFailure) {
        let labels = UpstreamErrorLabels {
            upstream: upstream.to_owned(),
            kind,
            reason,
        };
        self.upstream_errors.get_or_create(&labels).inc();
    }

    /// An upstream answered a narinfo lookup, with the narinfo (`Hit`) or without.
    pub fn upstream_lookup(&self, upstream: &str, result: UpstreamLookupResult) {
        let labels = UpstreamLookupLabels {
            upstream: upstream.to_owned(),
            result,
        };
        self.upstream_lookups.get_or_create(&labels).inc();
    }

    /// The counters of bytes received from `upstream`, to be counted as a body comes in.
    pub fn fetched_counters(&self, upstream: &str, kind: ObjectKind) -> [Counter; 2] {
        let labels = UpstreamLabels {
            upstream: upstream.to_owned(),
            kind,
        };
        [
            self.upstream_fetched.get_or_create(&labels).clone(),
            self.fetched_total.clone(),
        ]
    }

    /// The size limit as known (see [`UpkeepMetrics::max_size`]).
    pub fn max_size(&self) -> Option<u64> {
        self.upkeep.max_size()
    }

    /// This process's totals over the last hour (see [`RecentTotals`]).
    pub fn last_hour(&self) -> Totals {
        self.recent.last_hour(self.totals())
    }

    /// The `upstream_up` gauge of one upstream (0 until it answers).
    pub fn upstream_up_gauge(&self, upstream: &str) -> Gauge {
        let labels = UpstreamNameLabels {
            upstream: upstream.to_owned(),
        };
        self.upstream_up.get_or_create(&labels).clone()
    }

    pub fn scrubbed(&self, bytes: u64) {
        self.scrubbed_bytes.inc_by(bytes);
    }

    pub fn scrub_dropped(&self) {
        self.scrub_dropped.inc();
    }

    pub fn set_usage(&self, usage: &Usage) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.size_bytes
            .set(clamp(usage.nar_bytes.saturating_add(usage.side_bytes)));
        self.nars.set(clamp(usage.nars));
        self.narinfos.set(clamp(usage.narinfos));
    }

    /// Counts a finished garbage collection.
    pub fn gc_finished(&self, result: &Result<crate::gc::GcReport, crate::gc::GcError>) {
        let outcome = match result {
            Ok(report) => {
                let evicted = [
                    (ObjectKind::Narinfo, report.narinfos_evicted),
                    (ObjectKind::Nar, report.nars_deleted),
                ];
                for (kind, n) in evicted {
                    self.gc_evictions.get_or_create(&KindLabels { kind }).inc_by(n);
                }
                self.gc_freed_bytes.inc_by(report.bytes_freed);
                let kept = [
                    (KeptReason::Pinned, report.pinned_kept),
                    (KeptReason::Upload, report.uploads_kept),
                ];
                for (reason, n) in kept {
                    self.gc_kept.get_or_create(&KeptLabels { reason }).inc_by(n);
                }
                self.gc_pinned_paths
                    .set(i64::try_from(report.pinned_paths).unwrap_or(i64::MAX));
                self.gc_duration.observe(report.elapsed.as_secs_f64());
                GcResult::Ok
            }
            Err(crate::gc::GcError::Busy { .. }) => GcResult::Busy,
            Err(_) => GcResult::Error,
        };
        self.gc_runs
            .get_or_create(&GcLabels {
                kind: GcKind::Gc,
                result: outcome,
            })
            .inc();
    }

    pub fn connection_closed(&self, reason: ConnectionClosed) {
        self.connections_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn upload(&self, kind: ObjectKind, result: UploadResult) {
        self.uploads.get_or_create(&UploadLabels { kind, result }).inc();
    }

    /// An answer went out encoded with `encoding`.
    pub fn encoded(&self, encoding: Encoding) {
        self.encoded_responses
            .get_or_create(&EncodingLabels { encoding })
            .inc();
    }

    pub fn fill_refused(&self, limit: FillLimit) {
        self.fills_refused.get_or_create(&LimitLabels { limit }).inc();
    }
}
