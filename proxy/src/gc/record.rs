//! A finished run in the shared database's upkeep record ([`crate::db::UpkeepStore`]), which
//! every replica exports: a `nixcache gc` CronJob exits before anyone could scrape it.

use super::{GcError, GcReport};
use crate::{
    db::{MetadataStore, Timestamp, UpkeepKind, UpkeepRun},
    units::format_size,
};

/// Records a run that ended (a busy one did nothing; the running one records itself).
pub(super) async fn record(
    db: &dyn MetadataStore,
    started_at: Timestamp,
    max_size: u64,
    result: &Result<GcReport, GcError>,
) {
    let Some(run) = upkeep_run(started_at, max_size, result) else {
        return;
    };
    if let Err(err) = db.record_upkeep(&run).await {
        tracing::warn!(error = %err, "recording the garbage collection in the database failed");
    }
}

fn upkeep_run(started_at: Timestamp, max_size: u64, result: &Result<GcReport, GcError>) -> Option<UpkeepRun> {
    let run = UpkeepRun {
        kind: UpkeepKind::Gc,
        started_at,
        finished_at: Timestamp::now(),
        result: "ok",
        freed_bytes: 0,
        problems: 0,
        limit_bytes: max_size,
        summary: String::new(),
    };
    match result {
        Ok(report) => Some(UpkeepRun {
            result: if report.over_limit() { "over_limit" } else { "ok" },
            freed_bytes: report.bytes_freed,
            problems: report.storage_errors,
            summary: summary(report),
            ..run
        }),
        Err(GcError::Busy { .. }) => None,
        Err(err) => Some(UpkeepRun {
            result: "error",
            summary: format!("failed: {err}"),
            ..run
        }),
    }
}

fn summary(report: &GcReport) -> String {
    let mut line = format!(
        "evicted {} narinfos and {} NARs, {} listings and logs; freed {}; size now {} (limit {})",
        report.narinfos_evicted,
        report.nars_deleted,
        report.side_files_deleted,
        format_size(report.bytes_freed),
        format_size(report.size_after()),
        format_size(report.max_size),
    );
    if report.pinned_kept > 0 {
        line += &format!("; kept {} pinned paths", report.pinned_kept);
    }
    if report.storage_errors > 0 {
        line += &format!("; {} objects could not be deleted", report.storage_errors);
    }
    line
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn runs_become_records_and_busy_ones_do_not() {
        let report = GcReport {
            max_size: 1 << 20,
            narinfos_evicted: 3,
            nars_deleted: 2,
            bytes_freed: 4096,
            storage_errors: 1,
            ..GcReport::default()
        };
        let at = Timestamp::from_unix_ms(5);
        let over = GcReport {
            before: crate::db::Usage {
                nar_bytes: 2 << 20,
                ..Default::default()
            },
            ..report.clone()
        };
        assert_eq!(upkeep_run(at, 1 << 20, &Ok(over)).unwrap().result, "over_limit");
        let ok = upkeep_run(at, 1 << 20, &Ok(report)).unwrap();
        assert_eq!(
            (ok.result, ok.failed(), ok.freed_bytes, ok.problems),
            ("ok", false, 4096, 1)
        );
        assert!(
            ok.summary.starts_with("evicted 3 narinfos and 2 NARs"),
            "{}",
            ok.summary
        );
        assert!(
            ok.summary.ends_with("1 objects could not be deleted"),
            "{}",
            ok.summary
        );
        assert!(ok.finished_at >= at);

        let busy = Err(GcError::Busy { holder: "r1".into() });
        assert_eq!(upkeep_run(at, 1, &busy), None);
        let failed = Err(GcError::Db(crate::db::DbError::UnsupportedUrl("x".into())));
        let failed = upkeep_run(at, 7, &failed).unwrap();
        assert_eq!(
            (failed.result, failed.failed(), failed.limit_bytes),
            ("error", true, 7)
        );
        assert!(
            failed.summary.starts_with("failed: unsupported database URL"),
            "{}",
            failed.summary
        );
    }
}
