//! Names, help texts and units of every metric (the README's metrics table lists them too).

use prometheus_client::registry::Unit;

use super::{series::Described, Metrics};

impl Metrics {
    pub(super) fn register(&mut self) {
        let mut registry = std::mem::take(&mut self.registry);
        let mut series = Vec::new();
        let r = &mut Described {
            registry: &mut registry,
            series: &mut series,
            prefix: "nixcache",
        };
        self.register_http(r);
        self.register_cache(r);
        self.register_fills(r);
        self.register_upkeep(r);
        self.prefetch.register(r);
        self.register_hot_tier(r);
        self.fsck.register(r);
        self.upkeep.register(r);
        self.registry = registry;
        self.series = series;
    }

    /// Requests, connections and credential checks.
    fn register_http(&self, r: &mut Described<'_>) {
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
        r.register(
            "http_encoded_responses",
            "Answers sent with a Content-Encoding, by encoding (zstd, br, gzip)",
            self.encoded_responses.clone(),
        );
        r.register(
            "http_encoders_busy",
            "Answers that would have been encoded but went as stored, every encoder being busy",
            self.encoders_busy.clone(),
        );
    }

    /// Lookups, what was served, the size of the cache and writes.
    fn register_cache(&self, r: &mut Described<'_>) {
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
        r.register(
            "coalesced_requests",
            "Requests that joined a lookup or download already under way",
            self.coalesced.clone(),
        );
        r.register_with_unit(
            "cache_size",
            "Bytes of stored NAR files, listings and logs: what --max-size limits (refreshed every minute)",
            Unit::Bytes,
            self.size_bytes.clone(),
        );
        r.register("cache_nars", "Stored NAR files", self.nars.clone());
        r.register("cache_narinfos", "Known narinfos", self.narinfos.clone());
        r.register(
            "uploads",
            "PUT and DELETE requests by kind and result",
            self.uploads.clone(),
        );
    }

    /// Upstream requests and the fills they feed.
    fn register_fills(&self, r: &mut Described<'_>) {
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
            "upstream_up",
            "1 while an upstream answers, 0 while it is down and lookups skip it",
            self.upstream_up.clone(),
        );
        r.register(
            "upstream_lookups",
            "Narinfo lookups each upstream answered, by result (hit: with the narinfo; miss: without)",
            self.upstream_lookups.clone(),
        );
        r.register_with_unit(
            "upstream_fetched",
            "NAR bytes received from each upstream",
            Unit::Bytes,
            self.upstream_fetched.clone(),
        );
        r.register(
            "fills_in_flight",
            "NAR downloads (from an upstream or another replica) under way",
            self.fills_in_flight.clone(),
        );
        r.register(
            "fills_waiting",
            "NAR misses waiting for room under --max-fills/--max-fill-bytes (refused after a few seconds)",
            self.fills_waiting.clone(),
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
    }

    /// A replica's hot tier (`--hot-tier-dir`); its series stay at zero without one.
    fn register_hot_tier(&self, r: &mut Described<'_>) {
        let tier = &self.hot_tier;
        r.register_with_unit(
            "hot_tier",
            "Bytes of the hot tier's files and of the copies into it under way",
            Unit::Bytes,
            tier.bytes.clone(),
        );
        r.register("hot_tier_files", "NAR files in the hot tier", tier.files.clone());
        r.register(
            "hot_tier_reads",
            "NAR reads on a replica with a hot tier, by result (hit: from the tier; copied: from \
             the store, copied into the tier as it streams; miss: from the store only (a range, \
             too large, or being copied already); changed: the tier's file changed since it was \
             verified or is gone, and the store was read)",
            tier.reads.clone(),
        );
    }

    /// The background scrub and garbage collection.
    fn register_upkeep(&self, r: &mut Described<'_>) {
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
        r.register(
            "gc_kept",
            "Narinfos garbage collection would have evicted but kept, by reason (pinned, upload)",
            self.gc_kept.clone(),
        );
        r.register(
            "gc_pinned_paths",
            "Cached paths the pins held at the last garbage collection",
            self.gc_pinned_paths.clone(),
        );
        r.register_with_unit(
            "gc_duration",
            "Duration of garbage collections",
            Unit::Seconds,
            self.gc_duration.clone(),
        );
    }
}
