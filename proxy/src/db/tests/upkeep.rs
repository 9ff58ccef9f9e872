//! What GC and fsck runs recorded: totals add up over runs, the last run replaces the one
//! before, a failed run keeps the last good run's time, and kinds stay apart.

use crate::db::{MetadataStore, Timestamp, UpkeepKind, UpkeepRun};

fn run(kind: UpkeepKind, at: i64, result: &'static str, freed: u64) -> UpkeepRun {
    UpkeepRun {
        kind,
        started_at: Timestamp::from_unix_ms(at - 500),
        finished_at: Timestamp::from_unix_ms(at),
        result,
        freed_bytes: freed,
        problems: u64::from(result == "problems_left") * 3,
        limit_bytes: freed * 2,
        summary: format!("{result} at {at}\nsecond line"),
    }
}

pub(super) async fn upkeep_records(db: &dyn MetadataStore) {
    assert_eq!(db.upkeep().await.unwrap(), vec![]);
    let t = 1_700_000_000_000;
    db.record_upkeep(&run(UpkeepKind::Gc, t, "ok", 1000))
        .await
        .unwrap();
    db.record_upkeep(&run(UpkeepKind::Gc, t + 10, "ok", u64::from(u32::MAX) * 4))
        .await
        .unwrap();
    let failed = run(UpkeepKind::Gc, t + 20, "error", 0);
    db.record_upkeep(&failed).await.unwrap();
    db.record_upkeep(&run(UpkeepKind::Fsck, t + 30, "problems_left", 0))
        .await
        .unwrap();

    let records = db.upkeep().await.unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
    let (fsck, gc) = (&records[0], &records[1]);
    assert_eq!(gc.last.kind, UpkeepKind::Gc);
    assert_eq!((gc.runs, gc.failures), (3, 1));
    assert_eq!(gc.freed_bytes, 1000 + u64::from(u32::MAX) * 4, "64-bit totals");
    assert_eq!(
        gc.last,
        UpkeepRun {
            summary: format!("error at {} second line", t + 20),
            ..failed
        }
    );
    assert_eq!(gc.last_ok_at, Some(Timestamp::from_unix_ms(t + 10)));

    assert_eq!(fsck.last.kind, UpkeepKind::Fsck);
    assert_eq!((fsck.runs, fsck.failures, fsck.freed_bytes), (1, 0, 0));
    assert_eq!((fsck.last.result, fsck.last.problems), ("problems_left", 3));
    assert_eq!(fsck.last_ok_at, Some(Timestamp::from_unix_ms(t + 30)));
}
