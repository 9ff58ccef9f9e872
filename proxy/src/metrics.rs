//! Prometheus metrics (`GET /metrics`, text format). Labels are bounded: route templates, kinds,
//! results, configured upstream URLs and error classes, never object names.

use std::{fmt::Write as _, time::Duration};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::{Registry, Unit},
};

use crate::db::Usage;

/// `narinfo` or `nar`.
pub type Kind = &'static str;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: Kind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub kind: Kind,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
    pub kind: Kind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub upstream: String,
    pub kind: Kind,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs … ~55 s.
    Histogram::new(exponential_buckets(0.0001, 2.5, 15))
}

/// Every metric of the proxy; cloned handles share their values.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Histograms<RouteLabels>,
    /// `result`: `hit`, `miss` (fetched from an upstream), `not_found`, `error`.
    pub lookups: Family<ResultLabels, Counter>,
    pub served_bytes: Family<KindLabels, Counter>,
    pub upstream_duration: Histograms<UpstreamLabels>,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub fills_in_flight: Gauge,
    /// Requests that joined a lookup or download already under way instead of starting one.
    pub coalesced: Family<KindLabels, Counter>,
    pub size_bytes: Gauge,
    pub nars: Gauge,
    pub narinfos: Gauge,
    /// `result`: `ok`, `busy`, `error` (`kind` is `gc`).
    pub gc_runs: Family<ResultLabels, Counter>,
    pub gc_evictions: Family<KindLabels, Counter>,
    pub gc_freed_bytes: Counter,
    pub gc_duration: Histogram,
    /// `result`: `stored`, `exists`, `rejected`, `unauthorized`, `deleted`.
    pub uploads: Family<ResultLabels, Counter>,
    pub scrubbed_bytes: Counter,
    pub scrub_dropped: Counter,
    /// Fills refused with 503; `limit`: `fills` (`--max-fills`) or `bytes` (`--max-fill-bytes`).
    pub fills_refused: Family<LimitLabels, Counter>,
    /// Fills cancelled because every client left.
    pub fills_abandoned: Counter,
    /// Bytes written to the temp files of fills in progress.
    pub fill_temp_bytes: Gauge,
    /// The most the fills in progress may write: what `--max-fill-bytes` bounds.
    pub fill_reserved_bytes: Gauge,
    /// Client connections open (the probes-only reserve included).
    pub connections_open: Gauge,
    /// `reason`: `header_timeout`, `idle_timeout`, `evicted` (room for a new one at the limit),
    /// `send_timeout`.
    pub connections_closed: Family<ReasonLabels, Counter>,
    /// Connections past --max-connections, which answer only the health endpoints.
    pub connections_probes_only: Counter,
    /// bcrypt checks running (at most `auth::BCRYPT_AT_ONCE`).
    pub auth_hashes_in_flight: Gauge,
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
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            lookups: Family::default(),
            served_bytes: Family::default(),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            upstream_errors: Family::default(),
            fills_in_flight: Gauge::default(),
            coalesced: Family::default(),
            size_bytes: Gauge::default(),
            nars: Gauge::default(),
            narinfos: Gauge::default(),
            gc_runs: Family::default(),
            gc_evictions: Family::default(),
            gc_freed_bytes: Counter::default(),
            gc_duration: latency_histogram(),
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
        };
        m.register();
        m
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        r.register_with_unit(
            "scrubbed",
            "Bytes of stored NARs re-hashed by the background scrub",
            Unit::Bytes,
            self.scrubbed_bytes.clone(),
        );
        r.register(
            "scrub_dropped_nars",
            "Stored NARs the scrub found damaged or missing and dropped",
            self.scrub_dropped.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests by route, method and status",
            self.http_requests.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "Time to the response headers, by route",
            Unit::Seconds,
            self.http_duration.clone(),
        );
        r.register(
            "cache_lookups",
            "narinfo and NAR requests by result (hit, miss, not_found, error)",
            self.lookups.clone(),
        );
        r.register_with_unit(
            "served",
            "Body bytes sent to clients, by kind",
            Unit::Bytes,
            self.served_bytes.clone(),
        );
        r.register_with_unit(
            "upstream_request_duration",
            "Time to an upstream's response headers",
            Unit::Seconds,
            self.upstream_duration.clone(),
        );
        r.register(
            "upstream_errors",
            "Failed upstream requests by upstream, kind and reason",
            self.upstream_errors.clone(),
        );
        r.register(
            "fills_in_flight",
            "NAR downloads (from an upstream or another replica) under way",
            self.fills_in_flight.clone(),
        );
        r.register(
            "coalesced_requests",
            "Requests that joined a lookup or download already under way",
            self.coalesced.clone(),
        );
        r.register_with_unit(
            "cache_size",
            "Bytes of stored NAR files (refreshed every minute)",
            Unit::Bytes,
            self.size_bytes.clone(),
        );
        r.register("cache_nars", "Stored NAR files", self.nars.clone());
        r.register("cache_narinfos", "Known narinfos", self.narinfos.clone());
        r.register(
            "gc_runs",
            "Garbage collections by result (ok, busy, error)",
            self.gc_runs.clone(),
        );
        r.register(
            "gc_evictions",
            "Entries evicted by garbage collection, by kind",
            self.gc_evictions.clone(),
        );
        r.register_with_unit(
            "gc_freed",
            "Bytes freed by garbage collection",
            Unit::Bytes,
            self.gc_freed_bytes.clone(),
        );
        r.register_with_unit(
            "gc_duration",
            "Duration of garbage collections",
            Unit::Seconds,
            self.gc_duration.clone(),
        );
        r.register(
            "uploads",
            "PUT and DELETE requests by kind and result",
            self.uploads.clone(),
        );
        r.register(
            "fills_refused",
            "NAR fills refused with 503 by the limit reached (fills, bytes)",
            self.fills_refused.clone(),
        );
        r.register(
            "fills_abandoned",
            "NAR fills cancelled because every client left",
            self.fills_abandoned.clone(),
        );
        r.register_with_unit(
            "fill_temp",
            "Bytes in the temp files of NAR fills in progress",
            Unit::Bytes,
            self.fill_temp_bytes.clone(),
        );
        r.register_with_unit(
            "fill_reserved",
            "The most the NAR fills in progress may write (what --max-fill-bytes bounds)",
            Unit::Bytes,
            self.fill_reserved_bytes.clone(),
        );
        r.register(
            "http_connections",
            "Client connections open",
            self.connections_open.clone(),
        );
        r.register(
            "http_connections_closed",
            "Client connections the proxy closed, by reason (header_timeout, idle_timeout, evicted, send_timeout)",
            self.connections_closed.clone(),
        );
        r.register(
            "http_connections_probes_only",
            "Connections taken past --max-connections, which answer only /healthz and /readyz",
            self.connections_probes_only.clone(),
        );
        r.register(
            "auth_hashes_in_flight",
            "bcrypt checks of upload credentials running",
            self.auth_hashes_in_flight.clone(),
        );
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 << 10);
        if encode(&mut out, &self.registry).is_err() {
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }

    pub fn lookup(&self, kind: Kind, result: &'static str) {
        self.lookups.get_or_create(&ResultLabels { kind, result }).inc();
    }

    pub fn coalesced(&self, kind: Kind) {
        self.coalesced_counter(kind).inc();
    }

    /// The waiters-coalesced counter of `kind`, for code that counts without a `Metrics`.
    pub fn coalesced_counter(&self, kind: Kind) -> Counter {
        self.coalesced.get_or_create(&KindLabels { kind }).clone()
    }

    /// The bytes-served counter of `kind`, to be counted as a body goes out.
    pub fn served_counter(&self, kind: Kind) -> Counter {
        self.served_bytes.get_or_create(&KindLabels { kind }).clone()
    }

    pub fn upstream_request(&self, upstream: &str, kind: Kind, took: Duration) {
        let labels = UpstreamLabels {
            upstream: upstream.to_owned(),
            kind,
        };
        self.upstream_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn upstream_error(&self, upstream: &str, kind: Kind, reason: &'static str) {
        let labels = UpstreamErrorLabels {
            upstream: upstream.to_owned(),
            kind,
            reason,
        };
        self.upstream_errors.get_or_create(&labels).inc();
    }

    pub fn scrubbed(&self, bytes: u64) {
        self.scrubbed_bytes.inc_by(bytes);
    }

    pub fn scrub_dropped(&self) {
        self.scrub_dropped.inc();
    }

    pub fn set_usage(&self, usage: &Usage) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.size_bytes.set(clamp(usage.nar_bytes));
        self.nars.set(clamp(usage.nars));
        self.narinfos.set(clamp(usage.narinfos));
    }

    /// Counts a finished garbage collection.
    pub fn gc_finished(&self, result: &Result<crate::gc::GcReport, crate::gc::GcError>) {
        let outcome = match result {
            Ok(report) => {
                let evicted = [("narinfo", report.narinfos_evicted), ("nar", report.nars_deleted)];
                for (kind, n) in evicted {
                    self.gc_evictions.get_or_create(&KindLabels { kind }).inc_by(n);
                }
                self.gc_freed_bytes.inc_by(report.bytes_freed);
                self.gc_duration.observe(report.elapsed.as_secs_f64());
                "ok"
            }
            Err(crate::gc::GcError::Busy { .. }) => "busy",
            Err(_) => "error",
        };
        self.gc_runs
            .get_or_create(&ResultLabels {
                kind: "gc",
                result: outcome,
            })
            .inc();
    }

    pub fn connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn upload(&self, kind: Kind, result: &'static str) {
        self.uploads.get_or_create(&ResultLabels { kind, result }).inc();
    }

    pub fn fill_refused(&self, limit: &'static str) {
        self.fills_refused.get_or_create(&LimitLabels { limit }).inc();
    }
}
