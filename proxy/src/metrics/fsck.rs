//! What in-process fsck runs (`serve --fsck-schedule`) found and repaired.

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Unit,
};

use super::series::Described;
use super::{FsckProblem, FsckProblemLabels, FsckResult, FsckResultLabels};
use crate::fsck::{FsckError, FsckReport, Outcome};

#[derive(Default)]
pub struct FsckMetrics {
    pub runs: Family<FsckResultLabels, Counter>,
    pub problems: Family<FsckProblemLabels, Counter>,
    pub repaired: Counter,
    pub verified_bytes: Counter,
    /// When the last run that got to its end ended (unix seconds).
    pub last_run: Gauge,
}

impl FsckMetrics {
    pub(super) fn register(&self, r: &mut Described<'_>) {
        r.register(
            "fsck_runs",
            "In-process fsck runs by result (clean, repaired, problems_left; busy: another was \
             running; error)",
            self.runs.clone(),
        );
        r.register(
            "fsck_problems",
            "Problems fsck found, by kind (missing, wrong_size, damaged, orphan, stale_upload, \
             narinfo_without_nar)",
            self.problems.clone(),
        );
        r.register("fsck_repaired", "Problems fsck repaired", self.repaired.clone());
        r.register_with_unit(
            "fsck_verified",
            "Bytes of stored NARs fsck read and re-hashed",
            Unit::Bytes,
            self.verified_bytes.clone(),
        );
        r.register_with_unit(
            "fsck_last_run_timestamp",
            "When the last fsck run that got to its end ended (unix time)",
            Unit::Seconds,
            self.last_run.clone(),
        );
    }

    pub fn finished(&self, result: &Result<FsckReport, FsckError>) {
        let outcome = match result {
            Ok(report) => {
                self.count(report);
                match report.outcome() {
                    Outcome::Clean => FsckResult::Clean,
                    Outcome::Repaired => FsckResult::Repaired,
                    Outcome::ProblemsLeft => FsckResult::ProblemsLeft,
                }
            }
            Err(FsckError::Busy { .. }) => FsckResult::Busy,
            Err(_) => FsckResult::Error,
        };
        self.runs
            .get_or_create(&FsckResultLabels { result: outcome })
            .inc();
    }

    fn count(&self, report: &FsckReport) {
        let found = [
            (FsckProblem::Missing, report.missing.count),
            (FsckProblem::WrongSize, report.wrong_size.count),
            (FsckProblem::Damaged, report.damaged.count),
            (FsckProblem::Orphan, report.orphans.count),
            (FsckProblem::StaleUpload, report.stale_uploads.count),
            (FsckProblem::NarinfoWithoutNar, report.narinfos_without_nar),
        ];
        for (problem, n) in found {
            self.problems
                .get_or_create(&FsckProblemLabels { problem })
                .inc_by(n);
        }
        self.repaired.inc_by(report.repaired);
        self.verified_bytes.inc_by(report.verified_bytes);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_run
            .set(i64::try_from(now.as_secs()).unwrap_or(i64::MAX));
    }
}
