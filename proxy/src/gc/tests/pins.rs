//! Pins and `keep_uploads` on a run at `max_size` 0: a closure pin holds what its path
//! references (transitively), a path pin only itself, a pin of a path not cached holds nothing;
//! listings of pinned paths stay; a NAR a pinned and an unpinned narinfo share stays with the
//! pinned one; a dry run counts exactly what the real run keeps.

use std::sync::Arc;

use nixcache_protocol::StorePath;

use super::{fill, hash, ms, nar_file, nar_of, record, sqlite_and_local, ENTRIES};
use crate::{
    db::{MetadataStore, NarInfoRecord, PinRecord, SideFileRecord, Timestamp},
    gc::{run_once, GcOptions, GcReport},
    storage::{BlobKey, BlobStore},
};

fn pin(i: usize, closure: bool) -> PinRecord {
    PinRecord {
        path: StorePath::new(hash(i), &format!("p-{i}")).unwrap(),
        closure,
        declared: false,
        created_at: Timestamp::now(),
    }
}

/// Entry `i` replaced by `change(record)`, still accessed (long ago) as `fill` says.
async fn replace(db: &dyn MetadataStore, i: usize, change: impl FnOnce(&mut NarInfoRecord)) {
    let mut rec = record(i);
    change(&mut rec);
    db.put_narinfo(&rec).await.unwrap();
    db.record_access(&[hash(i)], &[], ms(1_000 + i as i64), ms(i64::MAX))
        .await
        .unwrap();
}

/// Entry `i` references `refs`.
async fn set_references(db: &dyn MetadataStore, i: usize, refs: &[usize]) {
    let refs = refs.iter().map(|&r| record(r).info.store_path).collect();
    replace(db, i, |rec| rec.info.references = refs).await;
}

/// Entry `i` made an uploaded path (its URL is relative).
async fn set_uploaded(db: &dyn MetadataStore, i: usize) {
    replace(db, i, |rec| rec.info.url = rec.nar_file.url()).await;
}

async fn listing(db: &dyn MetadataStore, storage: &dyn BlobStore, i: usize) -> String {
    let path = format!("{}.ls", hash(i));
    let key = BlobKey::for_side_file(&nixcache_protocol::SideFile::parse(&path).unwrap());
    let body = futures::stream::once(async { Ok(bytes::Bytes::from_static(b"{}")) });
    storage.put_stream(&key, Box::pin(body)).await.unwrap();
    let record = SideFileRecord {
        path: path.clone(),
        encoding: String::new(),
        size: 2,
        uploaded: false,
    };
    db.put_side_file(&record).await.unwrap();
    db.touch_side_files(std::slice::from_ref(&path), ms(100))
        .await
        .unwrap();
    path
}

async fn collect(
    db: &Arc<dyn MetadataStore>,
    storage: &dyn BlobStore,
    dry_run: bool,
    keep_uploads: bool,
) -> GcReport {
    let options = GcOptions {
        max_size: 0,
        keep_recent: std::time::Duration::ZERO,
        dry_run,
        keep_evicted: super::super::DEFAULT_KEEP_EVICTED,
        keep_uploads,
    };
    run_once(Arc::clone(db), storage, &options, "test", &mut |_| {})
        .await
        .unwrap()
}

#[tokio::test]
async fn pinned_closures_and_kept_uploads_survive_max_size_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (db, storage) = sqlite_and_local(dir.path()).await;
    fill(&*db, &storage).await;
    // 3 -> 5, 700; 700 -> 1100 (on another page of the LRU walk); 9 references 10, but is
    // pinned alone; 11 was uploaded.
    set_references(&*db, 3, &[3, 5, 700]).await;
    set_references(&*db, 700, &[1100]).await;
    set_references(&*db, 9, &[10]).await;
    set_uploaded(&*db, 11).await;
    // 507 shares its NAR with 7, which is not pinned.
    assert_eq!(nar_of(507), 7);
    for p in [
        pin(3, true),
        pin(9, false),
        pin(ENTRIES + 5, true),
        pin(507, false),
    ] {
        db.put_pin(&p).await.unwrap();
    }
    let kept_listing = listing(&*db, &storage, 5).await;
    let gone_listing = listing(&*db, &storage, 6).await;
    let held = [3, 5, 700, 1100, 9, 507];

    let dry = collect(&db, &storage, true, true).await;
    let real = collect(&db, &storage, false, true).await;
    for report in [&dry, &real] {
        assert_eq!((report.pins, report.pinned_paths), (4, 6), "{report}");
        assert_eq!((report.pinned_kept, report.uploads_kept), (6, 1), "{report}");
        assert_eq!(report.narinfos_evicted, (ENTRIES - 7) as u64, "{report}");
        assert_eq!(report.side_files_deleted, 1, "{report}");
    }
    assert!(
        dry.to_string()
            .contains("4 pins hold 6 cached paths; kept 6 pinned paths"),
        "{dry}"
    );
    assert_eq!(dry.nars_deleted, real.nars_deleted, "{dry}\n{real}");
    assert!(dry.to_string().contains("kept 1 uploaded paths"), "{dry}");
    for i in held.into_iter().chain([11]) {
        let rec = db.get_narinfo(&hash(i)).await.unwrap();
        assert!(rec.is_some(), "entry {i} was evicted");
        let nar = db.get_nar(&nar_file(nar_of(i))).await.unwrap();
        assert!(nar.is_some(), "entry {i}'s NAR was deleted");
        let object = storage
            .stat(&BlobKey::for_nar(&nar_file(nar_of(i))))
            .await
            .unwrap();
        assert!(object.is_some(), "entry {i}'s object");
    }
    assert!(db.get_narinfo(&hash(10)).await.unwrap().is_none());
    assert!(db.get_narinfo(&hash(7)).await.unwrap().is_none());
    assert!(db.get_side_file(&kept_listing).await.unwrap().is_some());
    assert!(db.get_side_file(&gone_listing).await.unwrap().is_none());
    let usage = db.usage().await.unwrap();
    assert_eq!((usage.narinfos, usage.nars), (7, 7), "{usage:?}");

    // Without keep_uploads the uploaded path goes; unpinned, the closure goes too.
    let again = collect(&db, &storage, false, false).await;
    assert_eq!(again.narinfos_evicted, 1, "{again}");
    assert!(db.get_narinfo(&hash(11)).await.unwrap().is_none());
    assert!(db.delete_pin(&hash(3)).await.unwrap());
    let unpinned = collect(&db, &storage, false, false).await;
    assert_eq!((unpinned.pins, unpinned.pinned_paths), (3, 2), "{unpinned}");
    assert_eq!(unpinned.narinfos_evicted, 4, "{unpinned}");
    assert!(db.get_narinfo(&hash(9)).await.unwrap().is_some());
}
