//! The conformance suite's part for GC and uploads: access times, LRU scans, usage, uploads.

use std::time::Duration;

use nixcache_protocol::{Compression, NarFile, Sha256Hash};

use super::record;
use crate::db::{LeaseKey, MetadataStore, NarRecord, Timestamp, UploadRecord};

/// The moment `n` milliseconds after the epoch.
fn ms(n: i64) -> Timestamp {
    Timestamp::from_unix_ms(n)
}

fn nar(file: &NarFile, size: u64) -> NarRecord {
    NarRecord {
        nar_file: file.clone(),
        file_size: size,
        nar_hash: Sha256Hash::digest(file.file_name().as_bytes()),
    }
}

pub(super) async fn lru(db: &dyn MetadataStore) {
    let base = db.usage().await.unwrap();
    let [r10, r11, r12] = [10, 11, 12].map(|n| record(n, vec![]));
    let mut r14 = record(14, vec![]);
    r14.nar_file = r10.nar_file.clone();
    let orphan = record(13, vec![]).nar_file;
    for r in [&r10, &r11, &r12, &r14] {
        db.put_narinfo(r).await.unwrap();
    }
    for (file, size) in [(&r10.nar_file, 100), (&r11.nar_file, 200), (&orphan, 50)] {
        db.put_nar(&nar(file, size)).await.unwrap();
    }
    let usage = db.usage().await.unwrap();
    assert_eq!(usage.nar_bytes, base.nar_bytes + 350);
    assert_eq!((usage.nars, usage.narinfos), (base.nars + 3, base.narinfos + 4));
    assert_eq!(db.count_narinfos_for_nar(&r10.nar_file).await.unwrap(), 2);
    assert_eq!(db.count_narinfos_for_nar(&orphan).await.unwrap(), 0);

    let hash = |r: &crate::db::NarInfoRecord| *r.info.store_path.hash();
    let any = ms(i64::MAX);
    db.record_access(&[hash(&r11)], &[], ms(2000), any).await.unwrap();
    db.record_access(&[hash(&r12)], &[], ms(5000), any).await.unwrap();
    // A NAR's access counts for every narinfo naming it.
    db.record_access(&[], &[r10.nar_file.clone(), orphan.clone()], ms(3000), any)
        .await
        .unwrap();
    // Rows another replica touched since `fresh` are left alone.
    db.record_access(&[hash(&r12)], &[], ms(9000), ms(4000))
        .await
        .unwrap();
    let order = |page: Vec<crate::db::NarinfoAccess>| page.into_iter().map(|e| e.hash).collect::<Vec<_>>();
    let all = db.least_recent_narinfos(ms(10_000), None, 10).await.unwrap();
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(all[0].hash, hash(&r11));
    assert_eq!(all[0].last_access, ms(2000));
    let mut tied = order(all[1..3].to_vec());
    tied.sort();
    let mut expected = vec![hash(&r10), hash(&r14)];
    expected.sort();
    assert_eq!(tied, expected, "both narinfos of the NAR were touched");
    assert_eq!(
        (all[3].hash, all[3].last_access),
        (hash(&r12), ms(5000)),
        "a fresh row is not rewritten"
    );
    // Pages continue after the cursor, ties included.
    let first = db.least_recent_narinfos(ms(10_000), None, 2).await.unwrap();
    let rest = db
        .least_recent_narinfos(ms(10_000), Some(&first[1].cursor()), 10)
        .await
        .unwrap();
    assert_eq!(order([first, rest].concat()), order(all));
    assert_eq!(
        order(db.least_recent_narinfos(ms(2500), None, 10).await.unwrap()),
        [hash(&r11)]
    );

    let orphans = db.least_recent_orphan_nars(ms(i64::MAX), None, 10).await.unwrap();
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    assert_eq!(
        (&orphans[0].nar_file, orphans[0].file_size, orphans[0].last_access),
        (&orphan, 50, ms(3000))
    );
    assert!(db
        .least_recent_orphan_nars(ms(i64::MAX), Some(&orphans[0].cursor()), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(db
        .least_recent_orphan_nars(ms(3000), None, 10)
        .await
        .unwrap()
        .is_empty());

    evictions(db, &r10, &r14).await;
    for r in [&r10, &r11, &r12, &r14] {
        db.delete_narinfo(r.info.store_path.hash()).await.unwrap();
    }
    for file in [&r11.nar_file, &orphan] {
        db.delete_nar(file).await.unwrap();
    }
    assert_eq!(db.usage().await.unwrap(), base);
}

/// r10 and r14 name one stored NAR: evicting marks, the NAR row goes with the last live one.
async fn evictions(db: &dyn MetadataStore, r10: &crate::db::NarInfoRecord, r14: &crate::db::NarInfoRecord) {
    let (h10, h14, file) = (
        r10.info.store_path.hash(),
        r14.info.store_path.hash(),
        &r10.nar_file,
    );
    let narinfos = db.usage().await.unwrap().narinfos;
    assert!(db.evict_narinfo(h10, ms(7000)).await.unwrap());
    assert!(!db.evict_narinfo(h10, ms(7001)).await.unwrap(), "evicted already");
    assert_eq!(
        db.get_narinfo(h10).await.unwrap(),
        None,
        "an evicted narinfo is a miss"
    );
    assert_eq!(db.usage().await.unwrap().narinfos, narinfos - 1);
    assert_eq!(db.count_narinfos_for_nar(file).await.unwrap(), 1);
    assert!(
        !db.delete_nar_if_unnamed(file).await.unwrap(),
        "r14 still names it"
    );
    assert!(db.evict_narinfo(h14, ms(7000)).await.unwrap());
    assert!(!db
        .least_recent_narinfos(ms(i64::MAX), None, 10)
        .await
        .unwrap()
        .iter()
        .any(|e| e.hash == *h10));
    // Still found for its NAR (so a client that cached the narinfo can have it fetched again).
    let found = db.narinfo_for_nar(file).await.unwrap().unwrap();
    assert!([*h10, *h14].contains(found.info.store_path.hash()));
    assert!(db.delete_nar_if_unnamed(file).await.unwrap());
    assert_eq!(db.get_nar(file).await.unwrap(), None);
    // Putting the narinfo again (looked up anew) makes it live.
    db.put_narinfo(r10).await.unwrap();
    assert!(db.get_narinfo(h10).await.unwrap().is_some());
    assert_eq!(db.purge_evicted_narinfos(ms(6999)).await.unwrap(), 0);
    assert_eq!(
        db.purge_evicted_narinfos(ms(7001)).await.unwrap(),
        1,
        "only r14 was still evicted"
    );
    assert_eq!(db.narinfo_for_nar(file).await.unwrap().unwrap(), r10.clone());
}

pub(super) async fn expired_leases(db: &dyn MetadataStore) {
    let (dead, live) = (
        LeaseKey::gc(),
        LeaseKey::narinfo(&nixcache_protocol::StorePathHash([9; 20])),
    );
    db.claim_lease(&dead, "a", "", Duration::from_millis(1))
        .await
        .unwrap();
    db.claim_lease(&live, "a", "", Duration::from_secs(60))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(db.delete_expired_leases(Timestamp::now()).await.unwrap(), 1);
    assert_eq!(db.get_lease(&dead).await.unwrap(), None);
    assert!(db.get_lease(&live).await.unwrap().is_some());
    db.release_lease(&live, "a").await.unwrap();
}

pub(super) async fn uploads(db: &dyn MetadataStore) {
    let upload = UploadRecord {
        nar_file: NarFile {
            hash: Sha256Hash::digest(b"upload"),
            compression: Compression::Zstd,
        },
        file_size: 10,
        nar_hash: Sha256Hash::digest(b"nar"),
        nar_size: 20,
    };
    assert_eq!(db.get_upload(&upload.nar_file).await.unwrap(), None);
    db.put_upload(&upload).await.unwrap();
    db.put_upload(&upload).await.unwrap();
    assert_eq!(
        db.get_upload(&upload.nar_file).await.unwrap(),
        Some(upload.clone())
    );
    assert_eq!(
        db.stale_uploads(Timestamp::now() + Duration::from_secs(10), 10)
            .await
            .unwrap(),
        std::slice::from_ref(&upload)
    );
    assert!(db
        .stale_uploads(Timestamp::now() - Duration::from_secs(100), 10)
        .await
        .unwrap()
        .is_empty());
    db.delete_upload(&upload.nar_file).await.unwrap();
    assert_eq!(db.get_upload(&upload.nar_file).await.unwrap(), None);
}
