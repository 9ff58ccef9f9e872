//! What GC and fsck runs recorded in the shared database, however they ran: every replica
//! exports the same values (aggregate them with `max`), read with the cache's size every minute.
//! The `*_total` series are the database's running totals, so they survive replica restarts.

use std::sync::{atomic::AtomicU64, Mutex, OnceLock};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Unit,
};

use super::series::Described;
use super::{UpkeepKindLabel, UpkeepLabels, UpkeepResult, UpkeepResultLabels};
use crate::db::{Timestamp, UpkeepKind, UpkeepRecord};

#[derive(Default)]
pub struct UpkeepMetrics {
    runs: Family<UpkeepLabels, Counter>,
    failures: Family<UpkeepLabels, Counter>,
    freed_bytes: Family<UpkeepLabels, Counter>,
    last_run: Family<UpkeepLabels, Gauge>,
    last_success: Family<UpkeepLabels, Gauge>,
    last_failed: Family<UpkeepLabels, Gauge>,
    /// 1 for the last recorded run's result, 0 for the kind's other results.
    last_result: Family<UpkeepResultLabels, Gauge>,
    last_duration: Family<UpkeepLabels, Gauge<f64, AtomicU64>>,
    last_problems: Family<UpkeepLabels, Gauge>,
    last_freed_bytes: Family<UpkeepLabels, Gauge>,
    /// The size limit: serve's `--max-size`, else the last recorded GC's.
    pub max_size_bytes: Gauge,
    max_size_flag: OnceLock<u64>,
    /// The records last read, for `/status`.
    records: Mutex<Vec<UpkeepRecord>>,
}

fn kind_label(kind: UpkeepKind) -> UpkeepKindLabel {
    match kind {
        UpkeepKind::Gc => UpkeepKindLabel::Gc,
        UpkeepKind::Fsck => UpkeepKindLabel::Fsck,
    }
}

fn labels(kind: UpkeepKind) -> UpkeepLabels {
    UpkeepLabels {
        kind: kind_label(kind),
    }
}

/// The results a kind's runs end with.
fn results(kind: UpkeepKind) -> &'static [UpkeepResult] {
    match kind {
        UpkeepKind::Gc => &[UpkeepResult::Ok, UpkeepResult::OverLimit, UpkeepResult::Error],
        UpkeepKind::Fsck => &[
            UpkeepResult::Clean,
            UpkeepResult::Repaired,
            UpkeepResult::ProblemsLeft,
            UpkeepResult::Error,
        ],
    }
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn secs(at: Timestamp) -> i64 {
    at.unix_secs()
}

/// Raises a counter to a running total read elsewhere (a total never goes down; one that did,
/// a database replaced, is ignored until it passes the old value).
fn raise(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

impl UpkeepMetrics {
    pub(super) fn register(&self, r: &mut Described<'_>) {
        r.register(
            "upkeep_runs",
            "GC and fsck runs recorded in the database, however they ran (the same on every replica)",
            self.runs.clone(),
        );
        r.register(
            "upkeep_failures",
            "Recorded GC and fsck runs that failed",
            self.failures.clone(),
        );
        r.register_with_unit(
            "upkeep_freed",
            "Bytes freed by recorded GC runs",
            Unit::Bytes,
            self.freed_bytes.clone(),
        );
        r.register_with_unit(
            "upkeep_last_run_timestamp",
            "When the last recorded run of each kind ended (unix time)",
            Unit::Seconds,
            self.last_run.clone(),
        );
        r.register_with_unit(
            "upkeep_last_success_timestamp",
            "When the last recorded run of each kind that did not fail ended (unix time)",
            Unit::Seconds,
            self.last_success.clone(),
        );
        r.register(
            "upkeep_last_run_failed",
            "1 when the last recorded run of each kind failed",
            self.last_failed.clone(),
        );
        r.register(
            "upkeep_last_run_result",
            "1 for how the last recorded run of each kind ended (gc: ok, over_limit, error; fsck: clean, \
             repaired, problems_left, error), 0 for the others",
            self.last_result.clone(),
        );
        r.register_with_unit(
            "upkeep_last_run_duration",
            "How long the last recorded run of each kind took",
            Unit::Seconds,
            self.last_duration.clone(),
        );
        r.register(
            "upkeep_last_run_problems",
            "fsck: problems the last recorded run found; gc: objects it could not delete",
            self.last_problems.clone(),
        );
        r.register_with_unit(
            "upkeep_last_run_freed",
            "Bytes the last recorded GC run freed",
            Unit::Bytes,
            self.last_freed_bytes.clone(),
        );
        r.register_with_unit(
            "cache_max_size",
            "The size limit: serve's --max-size, else the one the last recorded GC collected down to (0: none known)",
            Unit::Bytes,
            self.max_size_bytes.clone(),
        );
    }

    /// serve's `--max-size`, which wins over what GC runs recorded.
    pub fn set_max_size_flag(&self, max_size: u64) {
        let _ = self.max_size_flag.set(max_size);
        self.max_size_bytes.set(int(max_size));
    }

    /// The size limit as known: the flag, else the last recorded GC's; `None`: no limit known.
    pub fn max_size(&self) -> Option<u64> {
        let recorded = self.records().into_iter().find(|r| r.last.kind == UpkeepKind::Gc);
        self.max_size_flag
            .get()
            .copied()
            .or(recorded.map(|r| r.last.limit_bytes))
    }

    /// The records last read.
    pub fn records(&self) -> Vec<UpkeepRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn set_result(&self, kind: UpkeepKind, result: &str) {
        for &r in results(kind) {
            let labels = UpkeepResultLabels {
                kind: kind_label(kind),
                result: r,
            };
            self.last_result
                .get_or_create(&labels)
                .set(i64::from(r.as_str() == result));
        }
    }

    /// Takes what the database holds now.
    pub fn set(&self, records: Vec<UpkeepRecord>) {
        for record in &records {
            let labels = labels(record.last.kind);
            raise(&self.runs.get_or_create(&labels), record.runs);
            raise(&self.failures.get_or_create(&labels), record.failures);
            raise(&self.freed_bytes.get_or_create(&labels), record.freed_bytes);
            let last = &record.last;
            self.last_run.get_or_create(&labels).set(secs(last.finished_at));
            if let Some(at) = record.last_ok_at {
                self.last_success.get_or_create(&labels).set(secs(at));
            }
            self.last_failed
                .get_or_create(&labels)
                .set(i64::from(last.failed()));
            self.set_result(last.kind, last.result);
            let took = last
                .finished_at
                .unix_ms()
                .saturating_sub(last.started_at.unix_ms());
            self.last_duration
                .get_or_create(&labels)
                .set(took.max(0) as f64 / 1000.0);
            self.last_problems.get_or_create(&labels).set(int(last.problems));
            if last.kind == UpkeepKind::Gc {
                self.last_freed_bytes
                    .get_or_create(&labels)
                    .set(int(last.freed_bytes));
                if self.max_size_flag.get().is_none() {
                    self.max_size_bytes.set(int(last.limit_bytes));
                }
            }
        }
        if let Ok(mut kept) = self.records.lock() {
            *kept = records;
        }
    }
}
