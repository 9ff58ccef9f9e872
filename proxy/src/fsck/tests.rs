//! One cache with one of every problem, on SQLite with a local directory, PostgreSQL with S3
//! and MySQL with a local directory: fsck reports exactly those, a dry run changes nothing, a
//! repair fixes them (and names the uploaded path it lost), and a second run finds nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::PathBuf, sync::Arc, time::Duration};

use nixcache_protocol::{Compression, NarFile, NarInfo, Sha256Hash, StorePath, StorePathHash};
use nixcache_testsupport::s3::{S3sFs, ACCESS_KEY, SECRET_KEY};

use super::{run_once, FsckOptions, FsckReport, Outcome};
use crate::{
    db::{
        connect, testdb::TestDb, Engine, LeaseKey, MetadataStore, NarInfoRecord, NarRecord, SideFileRecord,
    },
    storage::{BlobKey, BlobStore, LocalStore, S3Config, S3Store},
};

const SIZE: usize = 1000;

/// A database and a storage, and where a stray object can be dropped behind their back.
struct Cache {
    db: Arc<dyn MetadataStore>,
    storage: Arc<dyn BlobStore>,
    /// The directory holding the objects (the S3 server's, for a bucket).
    object_dir: PathBuf,
    _keep: (TestDb, tempfile::TempDir, Option<S3sFs>),
}

async fn cache(engine: Engine, s3: bool) -> Option<Cache> {
    let test_db = TestDb::migrated(engine).await?;
    let db = connect(test_db.url()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    if !s3 {
        let storage = LocalStore::open(dir.path().join("nar"), dir.path().join("tmp"))
            .await
            .unwrap();
        let object_dir = dir.path().join("nar");
        return Some(Cache {
            db,
            storage: Arc::new(storage),
            object_dir,
            _keep: (test_db, dir, None),
        });
    }
    let server = S3sFs::start().await.unwrap()?;
    let bucket = server.create_bucket().unwrap();
    let config = S3Config {
        bucket: bucket.clone(),
        endpoint: Some(server.endpoint()),
        region: Some("us-east-1".into()),
        path_style: true,
        prefix: "cache".into(),
        credentials: Some(aws_sdk_s3::config::Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "test",
        )),
        timeouts: Default::default(),
        read_ahead: Default::default(),
    };
    let storage = S3Store::connect(&config).await.unwrap();
    let object_dir = server.data_dir().join(bucket).join("cache/nar");
    Some(Cache {
        db,
        storage: Arc::new(storage),
        object_dir,
        _keep: (test_db, dir, Some(server)),
    })
}

fn content(n: u8) -> Vec<u8> {
    vec![n; SIZE]
}

/// Uncompressed, so its FileHash is its NarHash.
fn nar_file(bytes: &[u8]) -> NarFile {
    NarFile {
        hash: Sha256Hash::digest(bytes),
        compression: Compression::None,
    }
}

fn store_path(n: u8) -> StorePath {
    StorePath::new(StorePathHash([n; 20]), &format!("p-{n}")).unwrap()
}

fn narinfo(n: u8, uploaded: bool) -> NarInfoRecord {
    let file = nar_file(&content(n));
    let url = if uploaded {
        file.url()
    } else {
        format!("http://up.example/{}", file.url())
    };
    let info = NarInfo {
        store_path: store_path(n),
        url,
        compression: Compression::None,
        file_hash: Some(file.hash),
        file_size: Some(SIZE as u64),
        nar_hash: file.hash,
        nar_size: SIZE as u64,
        references: vec![],
        deriver: None,
        sigs: vec![],
        ca: None,
    };
    NarInfoRecord {
        info,
        nar_file: file,
        proxy_sig: None,
    }
}

async fn put_object(storage: &dyn BlobStore, key: &BlobKey, bytes: Vec<u8>) {
    let body = futures::stream::once(async move { Ok(bytes::Bytes::from(bytes)) });
    storage.put_stream(key, Box::pin(body)).await.unwrap();
}

/// Entry `n`: its object, its NAR row and its narinfo.
async fn put_entry(c: &Cache, n: u8, uploaded: bool) -> NarInfoRecord {
    let record = narinfo(n, uploaded);
    put_object(&*c.storage, &BlobKey::for_nar(&record.nar_file), content(n)).await;
    let row = NarRecord {
        nar_file: record.nar_file.clone(),
        file_size: SIZE as u64,
        nar_hash: record.info.nar_hash,
    };
    c.db.put_nar(&row).await.unwrap();
    c.db.put_narinfo(&record).await.unwrap();
    record
}

const LISTING: &str = "0s4bwxv4f0jq9v0x6vhhmmqmhmzmp3sc.ls";

/// Entries 0 to 5, of which 0 and 5 are intact; 1 lost its object, 2 has one of another size,
/// 3 one with other bytes of the same size, 4 (uploaded: it exists nowhere else) lost its object. Then: an object no
/// row records, one under a name nixcache never writes, a listing whose object is gone, and an
/// uploaded narinfo whose NAR was never stored.
async fn damage(c: &Cache) -> Vec<NarInfoRecord> {
    let mut entries = Vec::new();
    for n in 0..6 {
        entries.push(put_entry(c, n, n == 4).await);
    }
    let key = |n: usize| BlobKey::for_nar(&entries[n].nar_file);
    c.storage.delete(&key(1)).await.unwrap();
    put_object(&*c.storage, &key(2), vec![2; SIZE + 10]).await;
    put_object(&*c.storage, &key(3), content(33)).await;
    c.storage.delete(&key(4)).await.unwrap();
    put_object(
        &*c.storage,
        &BlobKey::for_nar(&nar_file(&content(100))),
        content(100),
    )
    .await;
    std::fs::write(c.object_dir.join("notes.txt"), b"hello").unwrap();
    let listing = SideFileRecord {
        path: LISTING.into(),
        encoding: String::new(),
        size: 12,
        uploaded: false,
    };
    c.db.put_side_file(&listing).await.unwrap();
    c.db.put_narinfo(&narinfo(7, true)).await.unwrap();
    entries
}

fn options(verify: bool, repair: bool, dry_run: bool) -> FsckOptions {
    FsckOptions {
        verify,
        repair,
        dry_run,
        min_age: Duration::ZERO,
        jobs: 3,
    }
}

async fn fsck(c: &Cache, options: &FsckOptions) -> FsckReport {
    run_once(Arc::clone(&c.db), &*c.storage, options, "fsck-test")
        .await
        .unwrap()
}

/// (count, bytes) of every kind of problem, and the unknown objects.
fn found(r: &FsckReport) -> [(u64, u64); 6] {
    [
        r.missing,
        r.wrong_size,
        r.damaged,
        r.orphans,
        r.stale_uploads,
        r.unknown,
    ]
    .map(|t| (t.count, t.bytes))
}

async fn finds_and_repairs_every_problem(engine: Engine, s3: bool) {
    let Some(c) = cache(engine, s3).await else {
        return;
    };
    let entries = damage(&c).await;
    let lost = vec![store_path(4).to_string(), store_path(7).to_string()];
    let size = SIZE as u64;
    let expected = |damaged| {
        [
            (3, 2 * size + 12),
            (1, size + 10),
            (damaged, damaged * size),
            (1, size),
            (0, 0),
            (1, 5),
        ]
    };

    // Only sizes: the same-size damage goes unseen.
    let report = fsck(&c, &options(false, false, false)).await;
    assert_eq!(found(&report), expected(0), "{report}");
    assert_eq!(
        (
            report.nars.count,
            report.narinfos_without_nar,
            report.lost.clone()
        ),
        (6, 1, lost.clone())
    );
    assert_eq!((report.repaired, report.outcome()), (0, Outcome::ProblemsLeft));
    assert_eq!(report.verified_bytes, 0);

    // A dry run of a repair with --verify: everything seen, nothing changed.
    let report = fsck(&c, &options(true, true, true)).await;
    assert_eq!(found(&report), expected(1), "{report}");
    assert_eq!(
        report.verified_bytes,
        3 * size,
        "entries 0, 3 and 5 read: {report}"
    );
    assert!(
        report
            .to_string()
            .contains("dry run: 7 problems; nothing changed"),
        "{report}"
    );
    let again = fsck(&c, &options(true, false, false)).await;
    assert_eq!(found(&again), expected(1), "the dry run changed something");

    let report = fsck(&c, &options(true, true, false)).await;
    assert_eq!(found(&report), expected(1), "{report}");
    assert_eq!(
        (report.repaired, report.problems(), report.lost.clone()),
        (7, 7, lost),
        "{report}"
    );
    // Lost uploads remain a problem for a person: push them again.
    assert_eq!(report.outcome(), Outcome::ProblemsLeft);
    for n in [1, 2, 3, 4] {
        assert_eq!(
            c.db.get_nar(&entries[n].nar_file).await.unwrap(),
            None,
            "entry {n}"
        );
    }
    for n in [0, 5] {
        assert!(
            c.db.get_nar(&entries[n].nar_file).await.unwrap().is_some(),
            "entry {n}"
        );
    }
    // The upstream's narinfos stay (their NARs are fetched again); the uploaded ones are evicted
    // (their NARs answer 410, and pushing them again brings them back).
    assert!(c.db.get_narinfo(store_path(1).hash()).await.unwrap().is_some());
    assert_eq!(c.db.get_narinfo(store_path(4).hash()).await.unwrap(), None);
    assert_eq!(c.db.get_narinfo(store_path(7).hash()).await.unwrap(), None);
    assert_eq!(
        c.storage
            .stat(&BlobKey::for_nar(&entries[2].nar_file))
            .await
            .unwrap(),
        None
    );
    assert_eq!(c.db.get_side_file(LISTING).await.unwrap(), None);
    assert!(
        c.object_dir.join("notes.txt").exists(),
        "an unknown object is left alone"
    );

    let report = fsck(&c, &options(true, true, false)).await;
    assert_eq!(
        found(&report),
        [(0, 0), (0, 0), (0, 0), (0, 0), (0, 0), (1, 5)],
        "{report}"
    );
    assert_eq!(
        (report.outcome(), report.verified_bytes),
        (Outcome::Clean, 2 * size)
    );
}

/// Unrecorded objects younger than --min-age are left alone; a NAR whose lease another holds
/// is not repaired (and says so); one fsck at a time.
async fn leaves_young_objects_and_busy_nars_alone(engine: Engine, s3: bool) {
    let Some(c) = cache(engine, s3).await else {
        return;
    };
    let entry = put_entry(&c, 1, false).await;
    // Recorded objects beside the orphan: it is one of few.
    put_entry(&c, 2, false).await;
    put_entry(&c, 3, false).await;
    c.storage
        .delete(&BlobKey::for_nar(&entry.nar_file))
        .await
        .unwrap();
    put_object(
        &*c.storage,
        &BlobKey::for_nar(&nar_file(&content(100))),
        content(100),
    )
    .await;
    let nar_lease = LeaseKey::nar(&entry.nar_file);
    c.db.claim_lease(&nar_lease, "a-fill", "", Duration::from_secs(60))
        .await
        .unwrap();
    let young = FsckOptions {
        min_age: Duration::from_secs(3600),
        ..options(false, true, false)
    };
    let report = fsck(&c, &young).await;
    assert_eq!(
        (report.orphans.count, report.young, report.missing.count),
        (0, 1, 1),
        "{report}"
    );
    assert_eq!(
        (report.busy, report.repaired, report.outcome()),
        (1, 0, Outcome::ProblemsLeft),
        "{report}"
    );
    assert!(c.db.get_nar(&entry.nar_file).await.unwrap().is_some());

    c.db.claim_lease(&LeaseKey::fsck(), "another-fsck", "", Duration::from_secs(60))
        .await
        .unwrap();
    let busy = run_once(Arc::clone(&c.db), &*c.storage, &young, "fsck-test")
        .await
        .unwrap_err();
    assert!(busy.to_string().contains("another fsck is running"), "{busy}");
    c.db.release_lease(&LeaseKey::fsck(), "another-fsck")
        .await
        .unwrap();

    c.db.release_lease(&nar_lease, "a-fill").await.unwrap();
    let report = fsck(&c, &options(false, true, false)).await;
    assert_eq!(
        (report.orphans.count, report.repaired, report.outcome()),
        (1, 2, Outcome::Repaired),
        "{report}"
    );
}

/// Storage that lost every NAR (the wrong bucket, an empty volume) stops the repairs before
/// any, not the report: the rows stay. A dry run says a repair would stop.
async fn stops_repairs_when_storage_looks_wrong(engine: Engine, s3: bool) {
    let Some(c) = cache(engine, s3).await else {
        return;
    };
    for n in 0..40 {
        let entry = put_entry(&c, n, false).await;
        c.storage
            .delete(&BlobKey::for_nar(&entry.nar_file))
            .await
            .unwrap();
    }
    let dry = fsck(&c, &options(false, true, true)).await;
    assert!(dry.braked, "{dry}");
    let report = fsck(&c, &options(false, true, false)).await;
    assert!(report.braked, "{report}");
    assert_eq!((report.missing.count, report.repaired), (40, 0), "{report}");
    assert!(report.to_string().contains("repairs stopped"), "{report}");
    assert_eq!(report.outcome(), Outcome::ProblemsLeft);
    assert!(c.db.get_nar(&narinfo(0, false).nar_file).await.unwrap().is_some());
}

/// Storage full of objects that an empty database (or another cache's) knows nothing of: they
/// are reported, none is deleted.
async fn keeps_objects_an_empty_database_does_not_know(engine: Engine, s3: bool) {
    let Some(c) = cache(engine, s3).await else {
        return;
    };
    for n in 0..5 {
        put_object(&*c.storage, &BlobKey::for_nar(&nar_file(&content(n))), content(n)).await;
    }
    let report = fsck(&c, &options(false, true, false)).await;
    assert_eq!(
        (report.orphans.count, report.repaired, report.orphans_kept),
        (5, 0, true),
        "{report}"
    );
    assert!(report.to_string().contains("orphans kept"), "{report}");
    assert_eq!(report.outcome(), Outcome::ProblemsLeft);
    for n in 0..5 {
        let key = BlobKey::for_nar(&nar_file(&content(n)));
        assert_eq!(c.storage.stat(&key).await.unwrap(), Some(SIZE as u64));
    }
}

macro_rules! on_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite_local { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() { super::$scenario(crate::db::Engine::Sqlite, false).await } )* }
        mod postgres_s3 { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() { super::$scenario(crate::db::Engine::Postgres, true).await } )* }
        mod mysql_local { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() { super::$scenario(crate::db::Engine::MySql, false).await } )* }
    };
}

on_backends!(
    finds_and_repairs_every_problem,
    leaves_young_objects_and_busy_nars_alone,
    stops_repairs_when_storage_looks_wrong,
    keeps_objects_an_empty_database_does_not_know,
);

#[test]
fn exit_codes_say_what_was_found() {
    let codes = [Outcome::Clean, Outcome::Repaired, Outcome::ProblemsLeft].map(Outcome::exit_code);
    assert_eq!(codes, [0, 2, 3]);
}
