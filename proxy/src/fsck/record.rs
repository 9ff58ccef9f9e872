//! A finished run in the shared database's upkeep record ([`crate::db::UpkeepStore`]), which
//! every replica exports: a `nixcache fsck` CronJob exits before anyone could scrape it.

use super::{FsckError, FsckReport, Outcome};
use crate::db::{MetadataStore, Timestamp, UpkeepKind, UpkeepRun};

/// Records a run that ended (a busy one did nothing; the running one records itself).
pub(super) async fn record(
    db: &dyn MetadataStore,
    started_at: Timestamp,
    result: &Result<FsckReport, FsckError>,
) {
    let Some(run) = upkeep_run(started_at, result) else {
        return;
    };
    if let Err(err) = db.record_upkeep(&run).await {
        tracing::warn!(error = %err, "recording the fsck run in the database failed");
    }
}

fn upkeep_run(started_at: Timestamp, result: &Result<FsckReport, FsckError>) -> Option<UpkeepRun> {
    let run = UpkeepRun {
        kind: UpkeepKind::Fsck,
        started_at,
        finished_at: Timestamp::now(),
        result: "error",
        freed_bytes: 0,
        problems: 0,
        limit_bytes: 0,
        summary: String::new(),
    };
    match result {
        Ok(report) => Some(UpkeepRun {
            result: match report.outcome() {
                Outcome::Clean => "clean",
                Outcome::Repaired => "repaired",
                Outcome::ProblemsLeft => "problems_left",
            },
            problems: report.problems(),
            summary: report.to_string(),
            ..run
        }),
        Err(FsckError::Busy { .. }) => None,
        Err(err) => Some(UpkeepRun {
            summary: format!("failed: {err}"),
            ..run
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn runs_become_records_and_busy_ones_do_not() {
        let at = Timestamp::from_unix_ms(5);
        let clean = upkeep_run(at, &Ok(FsckReport::new(&Default::default()))).unwrap();
        assert_eq!(
            (clean.result, clean.failed(), clean.problems),
            ("clean", false, 0)
        );
        assert!(
            clean.summary.starts_with("checked 0 stored NARs"),
            "{}",
            clean.summary
        );

        let busy = Err(FsckError::Busy { holder: "r1".into() });
        assert_eq!(upkeep_run(at, &busy), None);
        let failed = Err(FsckError::Db(crate::db::DbError::UnsupportedUrl("x".into())));
        let failed = upkeep_run(at, &failed).unwrap();
        assert_eq!((failed.result, failed.failed()), ("error", true));
    }
}
