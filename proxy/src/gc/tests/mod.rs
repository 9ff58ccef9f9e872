//! A run over several pages, on SQLite and a local directory: NARs shared by narinfos on
//! different pages go with the last of them, a dry run reports exactly what the real run then
//! does, and exactly the least recently used go.

#![allow(clippy::unwrap_used)]

use std::{collections::HashMap, sync::Arc};

use nixcache_protocol::{Compression, NarFile, NarInfo, Sha256Hash, StorePath, StorePathHash};

use super::{run_once, GcOptions, GcReport, PAGE};
use crate::{
    db::{connect, LeaseKey, MetadataStore, NarInfoRecord, NarRecord},
    storage::{BlobKey, BlobRead, BlobStore, ByteRange, ByteStream, LocalStore, StorageError},
};

mod pins;

const ENTRIES: usize = 1200;
const NAR_BYTES: u64 = 1000;

fn ms(n: i64) -> crate::db::Timestamp {
    crate::db::Timestamp::from_unix_ms(n)
}

/// Entry `i`'s NAR: its own, except that entries 500..1000 ending in 07 share that of `i - 500`.
fn nar_of(i: usize) -> usize {
    if (500..1000).contains(&i) && i % 100 == 7 {
        i - 500
    } else {
        i
    }
}

fn nar_file(n: usize) -> NarFile {
    NarFile {
        hash: Sha256Hash::digest(format!("nar {n}").as_bytes()),
        compression: Compression::None,
    }
}

fn hash(i: usize) -> StorePathHash {
    let digest = Sha256Hash::digest(format!("path {i}").as_bytes());
    let mut hash = [0u8; 20];
    hash.copy_from_slice(&digest.0[..20]);
    StorePathHash(hash)
}

fn record(i: usize) -> NarInfoRecord {
    let file = nar_file(nar_of(i));
    let info = NarInfo {
        store_path: StorePath::new(hash(i), &format!("p-{i}")).unwrap(),
        url: format!("http://up.example/{}", file.url()),
        compression: Compression::None,
        file_hash: Some(file.hash),
        file_size: Some(NAR_BYTES),
        nar_hash: file.hash,
        nar_size: NAR_BYTES,
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

async fn fill(db: &dyn MetadataStore, storage: &dyn BlobStore) {
    for i in 0..ENTRIES {
        let rec = record(i);
        if nar_of(i) == i {
            let bytes = bytes::Bytes::from(vec![(i % 251) as u8; NAR_BYTES as usize]);
            let body = futures::stream::once(async move { Ok(bytes) });
            let key = BlobKey::for_nar(&rec.nar_file);
            storage.put_stream(&key, Box::pin(body)).await.unwrap();
            let nar = NarRecord {
                nar_file: rec.nar_file.clone(),
                file_size: NAR_BYTES,
                nar_hash: rec.info.nar_hash,
            };
            db.put_nar(&nar).await.unwrap();
        }
        db.put_narinfo(&rec).await.unwrap();
        // Accessed in order of `i`, long ago.
        db.record_access(&[hash(i)], &[], ms(1_000 + i as i64), ms(i64::MAX))
            .await
            .unwrap();
    }
}

async fn run(db: &Arc<dyn MetadataStore>, storage: &dyn BlobStore, max_size: u64, dry_run: bool) -> GcReport {
    let options = GcOptions {
        max_size,
        keep_recent: std::time::Duration::ZERO,
        dry_run,
        keep_evicted: super::DEFAULT_KEEP_EVICTED,
        keep_uploads: false,
    };
    let mut heard = 0;
    let report = run_once(Arc::clone(db), storage, &options, "test", &mut |_| heard += 1)
        .await
        .unwrap();
    assert_eq!(
        heard as u64,
        report.narinfos_evicted + report.nars_deleted,
        "{report}"
    );
    report
}

/// A SQLite database and a local store in `dir`.
async fn sqlite_and_local(dir: &std::path::Path) -> (Arc<dyn MetadataStore>, LocalStore) {
    let db = connect(&format!("sqlite://{}/db.sqlite", dir.display()))
        .await
        .unwrap();
    let storage = LocalStore::open(dir.join("nar"), dir.join("tmp")).await.unwrap();
    (db, storage)
}

#[tokio::test]
async fn runs_over_pages_take_exactly_the_least_recently_used() {
    assert!(ENTRIES > 2 * PAGE as usize);
    let dir = tempfile::tempdir().unwrap();
    let (db, storage) = sqlite_and_local(dir.path()).await;
    fill(&*db, &storage).await;
    // Evicting entries 0..700 frees the NARs all of whose narinfos are among them.
    let evicted = 700;
    let mut naming: HashMap<usize, Vec<usize>> = HashMap::new();
    for i in 0..ENTRIES {
        naming.entry(nar_of(i)).or_default().push(i);
    }
    let freed: Vec<usize> = naming
        .iter()
        .filter(|(_, v)| v.iter().all(|&i| i < evicted))
        .map(|(n, _)| *n)
        .collect();
    let total = naming.len() as u64 * NAR_BYTES;
    let max_size = total - freed.len() as u64 * NAR_BYTES;
    let before = db.usage().await.unwrap();
    assert_eq!(before.nar_bytes, total);

    let dry = run(&db, &storage, max_size, true).await;
    assert_eq!(db.usage().await.unwrap(), before, "a dry run changed something");
    let real = run(&db, &storage, max_size, false).await;
    for report in [&dry, &real] {
        assert_eq!(report.narinfos_evicted, evicted as u64, "{report}");
        assert_eq!(report.nars_deleted, freed.len() as u64, "{report}");
        assert_eq!(report.size_after(), max_size, "{report}");
    }
    for i in 0..ENTRIES {
        let live = db.get_narinfo(&hash(i)).await.unwrap().is_some();
        assert_eq!(live, i >= evicted, "narinfo {i}");
    }
    for (n, names) in &naming {
        let kept = !freed.contains(n);
        let file = nar_file(*n);
        assert_eq!(
            db.get_nar(&file).await.unwrap().is_some(),
            kept,
            "NAR of {names:?}"
        );
        let object = storage.stat(&BlobKey::for_nar(&file)).await.unwrap();
        assert_eq!(object.is_some(), kept, "object of {names:?}");
    }
    // Shared across pages: 7 and 507 both evicted, so their NAR went; 207 went but 707 stays.
    assert!(freed.contains(&7) && !freed.contains(&207));
}

/// Local storage whose deletes never finish: a run removing a NAR stays in the middle of it.
struct HangingDeletes {
    inner: LocalStore,
    entered: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl BlobStore for HangingDeletes {
    async fn stat(&self, key: &BlobKey) -> Result<Option<u64>, StorageError> {
        self.inner.stat(key).await
    }
    async fn get(&self, key: &BlobKey, range: Option<ByteRange>) -> Result<BlobRead, StorageError> {
        self.inner.get(key, range).await
    }
    async fn put_stream(&self, key: &BlobKey, body: ByteStream) -> Result<u64, StorageError> {
        self.inner.put_stream(key, body).await
    }
    async fn delete(&self, _key: &BlobKey) -> Result<bool, StorageError> {
        self.entered.notify_one();
        std::future::pending().await
    }
    async fn ping(&self) -> Result<(), StorageError> {
        self.inner.ping().await
    }
    fn list(&self) -> crate::storage::Listing {
        self.inner.list()
    }
}

/// A run dropped (cancelled) while it removes a NAR releases the NAR's lease at once: fills of
/// that NAR need not wait for it to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_releases_its_nar_lease() {
    let dir = tempfile::tempdir().unwrap();
    let db = connect(&format!("sqlite://{}/db.sqlite", dir.path().display()))
        .await
        .unwrap();
    let inner = LocalStore::open(dir.path().join("nar"), dir.path().join("tmp"))
        .await
        .unwrap();
    // One entry, so the one removal in progress is this NAR's.
    let rec = record(0);
    let body = futures::stream::once(async { Ok(bytes::Bytes::from(vec![0; NAR_BYTES as usize])) });
    inner
        .put_stream(&BlobKey::for_nar(&rec.nar_file), Box::pin(body))
        .await
        .unwrap();
    let nar = NarRecord {
        nar_file: rec.nar_file.clone(),
        file_size: NAR_BYTES,
        nar_hash: rec.info.nar_hash,
    };
    db.put_nar(&nar).await.unwrap();
    db.put_narinfo(&rec).await.unwrap();
    db.record_access(&[hash(0)], &[], ms(1_000), ms(i64::MAX))
        .await
        .unwrap();
    let storage = HangingDeletes {
        inner,
        entered: tokio::sync::Notify::new(),
    };
    let options = GcOptions {
        max_size: 0,
        keep_recent: std::time::Duration::ZERO,
        dry_run: false,
        keep_evicted: super::DEFAULT_KEEP_EVICTED,
        keep_uploads: false,
    };
    let lease = LeaseKey::nar(&rec.nar_file);
    let mut ignore = |_: super::Evicted<'_>| {};
    let mut run = Box::pin(run_once(Arc::clone(&db), &storage, &options, "test", &mut ignore));
    tokio::select! {
        _ = &mut run => panic!("the run ended although its delete hangs"),
        () = storage.entered.notified() => {}
    }
    assert!(
        db.get_lease(&lease).await.unwrap().is_some(),
        "GC deletes without the NAR's lease"
    );
    drop(run);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while db.get_lease(&lease).await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the cancelled run's NAR lease is still held"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn listings_and_logs_go_first_and_count_towards_the_limit() {
    use crate::db::SideFileRecord;
    let dir = tempfile::tempdir().unwrap();
    let (db, storage) = sqlite_and_local(dir.path()).await;
    fill(&*db, &storage).await;
    let nars = db.usage().await.unwrap().nar_bytes;
    // Three side files of 400 bytes, accessed after every narinfo, the log last.
    let paths = [
        format!("{}.ls", hash(1)),
        format!("{}.ls", hash(2)),
        format!("log/{}-p-3.drv", hash(3)),
    ];
    for (n, path) in paths.iter().enumerate() {
        let key = BlobKey::for_side_file(&nixcache_protocol::SideFile::parse(path).unwrap());
        let body = futures::stream::once(async { Ok(bytes::Bytes::from(vec![b'x'; 400])) });
        storage.put_stream(&key, Box::pin(body)).await.unwrap();
        let record = SideFileRecord {
            path: path.clone(),
            encoding: String::new(),
            size: 400,
            uploaded: n == 2,
        };
        db.put_side_file(&record).await.unwrap();
        db.touch_side_files(&[path.to_string()], ms(100_000 + n as i64))
            .await
            .unwrap();
    }
    let usage = db.usage().await.unwrap();
    assert_eq!((usage.side_files, usage.side_bytes), (3, 1200));

    // Over by 500 bytes: the two least recent side files go, before any narinfo (although
    // those were accessed earlier), and nothing else.
    let max_size = nars + 1200 - 500;
    let dry = run(&db, &storage, max_size, true).await;
    let real = run(&db, &storage, max_size, false).await;
    for report in [&dry, &real] {
        assert_eq!(report.side_files_deleted, 2, "{report}");
        assert_eq!(report.narinfos_evicted, 0, "{report}");
        assert_eq!(report.size_after(), nars + 400, "{report}");
        assert!(
            report.to_string().contains("1.2 KiB in 3 listings and logs"),
            "{report}"
        );
    }
    for (n, path) in paths.iter().enumerate() {
        let kept = n == 2;
        assert_eq!(db.get_side_file(path).await.unwrap().is_some(), kept, "{path}");
        let object = storage
            .stat(&BlobKey::for_side_file(
                &nixcache_protocol::SideFile::parse(path).unwrap(),
            ))
            .await
            .unwrap();
        assert_eq!(object.is_some(), kept, "{path}");
    }
    // Further down, the last one goes too, then narinfos.
    let report = run(&db, &storage, nars - NAR_BYTES, false).await;
    assert_eq!(report.side_files_deleted, 1, "{report}");
    assert!(report.narinfos_evicted >= 1, "{report}");
    assert_eq!(db.usage().await.unwrap().side_files, 0);
}

#[tokio::test]
async fn evicted_narinfos_stay_for_keep_evicted_then_go() {
    let dir = tempfile::tempdir().unwrap();
    let (db, storage) = sqlite_and_local(dir.path()).await;
    fill(&*db, &storage).await;
    let report = run(&db, &storage, 0, false).await;
    assert_eq!(report.narinfos_evicted, ENTRIES as u64, "{report}");
    assert_eq!(report.narinfos_purged, 0, "{report}");
    // A client that cached the narinfo still finds where its NAR comes from.
    assert!(db.narinfo_for_nar(&nar_file(0)).await.unwrap().is_some());
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let options = GcOptions {
        max_size: 0,
        keep_recent: std::time::Duration::ZERO,
        dry_run: false,
        keep_evicted: std::time::Duration::ZERO,
        keep_uploads: false,
    };
    let report = run_once(Arc::clone(&db), &storage, &options, "test", &mut |_| {})
        .await
        .unwrap();
    assert_eq!(report.narinfos_purged, ENTRIES as u64, "{report}");
    assert!(db.narinfo_for_nar(&nar_file(0)).await.unwrap().is_none());
}
