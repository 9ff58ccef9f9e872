//! The conformance suite's part for side files: NAR listings and build logs.

use std::time::Duration;

use nixcache_protocol::{NarFile, Sha256Hash};

use super::record;
use crate::db::{
    connect, testdb::TestDb, DbError, Engine, MetadataStore, NarRecord, SideFileRecord, Timestamp,
};

/// The moment `n` milliseconds after the epoch.
fn ms(n: i64) -> Timestamp {
    Timestamp::from_unix_ms(n)
}

fn side(path: &str, encoding: &str, size: u64, uploaded: bool) -> SideFileRecord {
    SideFileRecord {
        path: path.into(),
        encoding: encoding.into(),
        size,
        uploaded,
    }
}

/// (path, last access) of the side files accessed before `before`, in LRU order.
async fn lru(db: &dyn MetadataStore, before: Timestamp, limit: u32) -> Vec<(String, Timestamp)> {
    let page = db.least_recent_side_files(before, None, limit).await.unwrap();
    page.into_iter().map(|e| (e.path, e.last_access)).collect()
}

pub(super) async fn side_files(db: &dyn MetadataStore) {
    let base = db.usage().await.unwrap();
    // "0…" sorts before "log/…", "1…" after "0…": ties below are ordered by path.
    let ls = side("0s4bwxv4f0jq9v0x6vhhmmqmhmzmp3sc.ls", "br", 300, false);
    let other = side("1s4bwxv4f0jq9v0x6vhhmmqmhmzmp3sc.ls", "zstd", 20, false);
    let log = side(
        "log/7sq0mfllcwyfswmb0rx8c6f4kq5kdq8n-hello-2.12.drv",
        "",
        4000,
        true,
    );
    assert_eq!(db.get_side_file(&ls.path).await.unwrap(), None);

    let put_at = Timestamp::now();
    for r in [&ls, &other, &log] {
        db.put_side_file(r).await.unwrap();
    }
    let done = Timestamp::now();
    for r in [&ls, &other, &log] {
        assert_eq!(db.get_side_file(&r.path).await.unwrap().as_ref(), Some(r));
    }
    // Recorded as accessed now.
    let fresh = db
        .least_recent_side_files(done + Duration::from_millis(1), None, 10)
        .await
        .unwrap();
    assert_eq!(fresh.len(), 3, "{fresh:?}");
    assert!(
        fresh
            .iter()
            .all(|e| e.last_access >= put_at && e.last_access <= done),
        "{fresh:?}"
    );
    assert!(lru(db, put_at, 10).await.is_empty());

    // Side files count apart from the NARs.
    let nar = record(40, vec![]).nar_file;
    db.put_nar(&nar_row(&nar, 7)).await.unwrap();
    let usage = db.usage().await.unwrap();
    assert_eq!(
        (usage.side_files, usage.side_bytes),
        (base.side_files + 3, base.side_bytes + 4320)
    );
    assert_eq!((usage.nars, usage.nar_bytes), (base.nars + 1, base.nar_bytes + 7));
    assert_eq!(usage.narinfos, base.narinfos);

    // Putting again replaces the record: one row per path.
    let ls2 = side(&ls.path, "gzip", 250, true);
    db.put_side_file(&ls2).await.unwrap();
    assert_eq!(db.get_side_file(&ls.path).await.unwrap(), Some(ls2.clone()));
    let usage = db.usage().await.unwrap();
    assert_eq!(
        (usage.side_files, usage.side_bytes),
        (base.side_files + 3, base.side_bytes + 4270)
    );

    side_file_lru(db, &ls2, &other, &log).await;

    assert!(db.delete_side_file(&ls.path).await.unwrap());
    assert!(!db.delete_side_file(&ls.path).await.unwrap(), "deleted already");
    assert_eq!(db.get_side_file(&ls.path).await.unwrap(), None);
    assert_eq!(db.get_side_file(&log.path).await.unwrap(), Some(log.clone()));
    for r in [&other, &log] {
        assert!(db.delete_side_file(&r.path).await.unwrap());
    }
    db.delete_nar(&nar).await.unwrap();
    assert_eq!(db.usage().await.unwrap(), base);
    refuses_bad_paths(db).await;
}

fn nar_row(file: &NarFile, size: u64) -> NarRecord {
    NarRecord {
        nar_file: file.clone(),
        file_size: size,
        nar_hash: Sha256Hash::digest(file.file_name().as_bytes()),
    }
}

/// Touches move side files in the LRU order; `before` is exclusive, `limit` a bound.
async fn side_file_lru(
    db: &dyn MetadataStore,
    ls: &SideFileRecord,
    other: &SideFileRecord,
    log: &SideFileRecord,
) {
    let (ls, other, log) = (ls.path.clone(), other.path.clone(), log.path.clone());
    db.touch_side_files(&[ls.to_string()], ms(1000)).await.unwrap();
    db.touch_side_files(&[other.to_string()], ms(2000)).await.unwrap();
    db.touch_side_files(&[log.to_string()], ms(3000)).await.unwrap();
    // Absent: nothing happens, no error.
    db.touch_side_files(&["log/nothing-here.drv".to_string()], ms(1))
        .await
        .unwrap();
    let all = db.least_recent_side_files(ms(10_000), None, 10).await.unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(
        (
            all[0].path.as_str(),
            all[0].size,
            all[0].uploaded,
            all[0].last_access
        ),
        (ls.as_str(), 250, true, ms(1000))
    );
    assert_eq!(
        (
            all[2].path.as_str(),
            all[2].size,
            all[2].uploaded,
            all[2].last_access
        ),
        (log.as_str(), 4000, true, ms(3000))
    );
    assert_eq!((all[1].size, all[1].uploaded), (20, false));
    assert_eq!(
        lru(db, ms(3000), 10).await,
        [(ls.clone(), ms(1000)), (other.clone(), ms(2000))],
        "before is exclusive"
    );
    assert_eq!(lru(db, ms(10_000), 1).await, [(ls.clone(), ms(1000))]);
    assert!(lru(db, ms(1000), 10).await.is_empty());

    // Touched again, `ls` becomes the most recent; ties go by path.
    db.touch_side_files(&[ls.to_string()], ms(5000)).await.unwrap();
    // Both in one batch (as a flush writes them): the same time.
    db.touch_side_files(&[other.to_string(), log.to_string()], ms(4000))
        .await
        .unwrap();
    assert_eq!(
        lru(db, ms(10_000), 10).await,
        [
            (other.clone(), ms(4000)),
            (log.clone(), ms(4000)),
            (ls.clone(), ms(5000))
        ]
    );
    // A page after a cursor skips exactly what came before it, ties included.
    let first = db.least_recent_side_files(ms(10_000), None, 1).await.unwrap();
    assert_eq!(first[0].path, other);
    let rest = db
        .least_recent_side_files(ms(10_000), Some(&first[0].cursor()), 10)
        .await
        .unwrap();
    let rest: Vec<_> = rest.into_iter().map(|r| r.path).collect();
    assert_eq!(rest, [log.clone(), ls.clone()]);
    db.touch_side_files(&[other.to_string()], ms(4001)).await.unwrap();
    assert_eq!(
        lru(db, ms(10_000), 2).await,
        [(log.clone(), ms(4000)), (other.clone(), ms(4001))]
    );
}

/// Paths and encodings the MySQL columns could not hold are refused on every engine; the
/// longest allowed fit everywhere.
async fn refuses_bad_paths(db: &dyn MetadataStore) {
    let before = db.usage().await.unwrap();
    let longest = format!("log/{}.drv", "a".repeat(255 - 8));
    let fits = side(&longest, "0123456789abcdef", 1, false);
    db.put_side_file(&fits).await.unwrap();
    assert_eq!(db.get_side_file(&longest).await.unwrap(), Some(fits));
    assert!(db.delete_side_file(&longest).await.unwrap());
    let too_long = format!("{longest}x");
    for bad in [
        side(&too_long, "", 1, false),
        side("/x.ls", "", 1, false),
        side("", "", 1, false),
        side("log/h\u{e9}llo.drv", "", 1, false),
        side("log/a b.drv", "", 1, false),
        side("x.ls", "0123456789abcdefg", 1, false),
        side("x.ls", "b r", 1, false),
        side("x.ls", "", u64::MAX, false),
    ] {
        let err = db.put_side_file(&bad).await.unwrap_err();
        assert!(matches!(err, DbError::Corrupt { .. }), "{bad:?}: {err:?}");
    }
    assert_eq!(db.usage().await.unwrap(), before);
}

/// Rows that break the records' rules are reported, not read as something else; the schema's
/// own check keeps `uploaded` to 0 and 1.
pub(super) async fn refuses_corrupt_side_files(engine: Engine) {
    let Some(testdb) = TestDb::migrated(engine).await else {
        return;
    };
    let insert = |path: &str, size: i64, uploaded: i64| {
        format!(
            "INSERT INTO side_files (path, encoding, size, uploaded, created_at, last_access) \
             VALUES ('{path}', '', {size}, {uploaded}, 0, 0)"
        )
    };
    testdb.execute(&insert("bad.ls", -1, 0)).await.unwrap();
    assert!(
        testdb.execute(&insert("flag.ls", 1, 2)).await.is_err(),
        "uploaded = 2 accepted"
    );
    let db = connect(testdb.url()).await.unwrap();
    let err = db.get_side_file("bad.ls").await.unwrap_err();
    assert!(
        matches!(&err, DbError::Corrupt { key, field: "size", .. } if key == "bad.ls"),
        "{err:?}"
    );
    let err = db.least_recent_side_files(ms(1), None, 10).await.unwrap_err();
    assert!(matches!(err, DbError::Corrupt { field: "size", .. }), "{err:?}");
    assert_eq!(db.get_side_file("flag.ls").await.unwrap(), None);
}
