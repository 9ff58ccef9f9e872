//! The conformance suite's part for `nixcache fsck`'s scans: every table in key order, a page at
//! a time; uploaded narinfos without their NAR; which object names a row records.

use std::{collections::HashSet, time::Duration};

use nixcache_protocol::{Compression, NarFile, Sha256Hash};

use super::record;
use crate::db::{MetadataStore, NarRecord, SideFileRecord, Timestamp, UploadRecord};

fn file(n: u8) -> NarFile {
    NarFile {
        hash: Sha256Hash::digest(&[n, 9]),
        compression: Compression::Zstd,
    }
}

/// Every row of a scan, read two at a time.
async fn scan_all<T, K, F, Fut>(mut page: F, key: impl Fn(&T) -> K) -> Vec<T>
where
    F: FnMut(Option<K>) -> Fut,
    Fut: std::future::Future<Output = Vec<T>>,
{
    let (mut all, mut after) = (Vec::new(), None);
    loop {
        let rows = page(after.take()).await;
        assert!(rows.len() <= 2);
        let Some(last) = rows.last() else {
            return all;
        };
        after = Some(key(last));
        all.extend(rows);
    }
}

pub(super) async fn audit_scans(db: &dyn MetadataStore) {
    let mut nars: Vec<NarRecord> = (0..5)
        .map(|n| NarRecord {
            nar_file: file(n),
            file_size: u64::from(n) + 1,
            nar_hash: Sha256Hash::digest(&[n]),
        })
        .collect();
    for nar in &nars {
        db.put_nar(nar).await.unwrap();
    }
    nars.sort_by_key(|n| n.nar_file.file_name());
    let scanned = scan_all(
        |after: Option<NarFile>| async move { db.nars_after(after.as_ref(), 2).await.unwrap() },
        |n| n.nar_file.clone(),
    )
    .await;
    assert_eq!(scanned, nars);

    let upload = UploadRecord {
        nar_file: file(20),
        file_size: 10,
        nar_hash: Sha256Hash::digest(b"nar"),
        nar_size: 20,
    };
    let before = Timestamp::now() - Duration::from_secs(2);
    db.put_upload(&upload).await.unwrap();
    let uploads = db.uploads_after(None, 2).await.unwrap();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].upload, upload);
    let created = uploads[0].created_at;
    assert!(created >= before && created <= Timestamp::now(), "{created:?}");
    assert!(db
        .uploads_after(Some(&upload.nar_file), 2)
        .await
        .unwrap()
        .is_empty());

    let paths = [
        "0s4bwxv4f0jq9v0x6vhhmmqmhmzmp3sc.ls",
        "1s4bwxv4f0jq9v0x6vhhmmqmhmzmp3sc.ls",
        "log/x-a.drv",
    ];
    for (n, path) in paths.iter().enumerate() {
        let side = SideFileRecord {
            path: (*path).into(),
            encoding: String::new(),
            size: n as u64,
            uploaded: n == 1,
        };
        db.put_side_file(&side).await.unwrap();
    }
    let sides = scan_all(
        |after: Option<String>| async move { db.side_files_after(after.as_deref(), 2).await.unwrap() },
        |s| s.path.clone(),
    )
    .await;
    let got: Vec<_> = sides
        .iter()
        .map(|s| (s.path.as_str(), s.size, s.uploaded))
        .collect();
    assert_eq!(
        got,
        [(paths[0], 0, false), (paths[1], 1, true), (paths[2], 2, false)]
    );

    uploaded_narinfos_without_nar(db, &nars[0]).await;
    let names: Vec<String> = [file(0), file(20), file(30)]
        .iter()
        .map(NarFile::file_name)
        .chain([paths[2].into(), "log/y".into()])
        .collect();
    let recorded = db.recorded_among(&names).await.unwrap();
    let want: HashSet<String> = [names[0].clone(), names[1].clone(), names[3].clone()].into();
    assert_eq!(recorded, want);
    // More names than one statement takes.
    let many: Vec<String> = (0..1200)
        .map(|n| format!("log/{n}-x.drv"))
        .chain([names[0].clone()])
        .collect();
    assert_eq!(db.recorded_among(&many).await.unwrap(), [names[0].clone()].into());
}

/// Only live uploaded narinfos whose NAR has no row: not an upstream's, not an evicted one, not
/// one whose NAR is stored, not one whose NAR an upstream's narinfo names.
async fn uploaded_narinfos_without_nar(db: &dyn MetadataStore, stored: &NarRecord) {
    let uploaded = |n: u8, file: NarFile| {
        let mut r = record(n, vec![]);
        r.info.url = file.url();
        r.nar_file = file;
        r
    };
    let lost = [
        uploaded(40, file(40)),
        uploaded(41, file(41)),
        uploaded(42, file(42)),
    ];
    let evicted = uploaded(43, file(43));
    let backed = uploaded(44, stored.nar_file.clone());
    let upstream = record(45, vec![]);
    // An upstream's narinfo names this one's NAR: it is fetched again, not lost.
    let fetchable = uploaded(46, upstream.nar_file.clone());
    for r in lost.iter().chain([&evicted, &backed, &upstream, &fetchable]) {
        db.put_narinfo(r).await.unwrap();
    }
    db.evict_narinfo(evicted.info.store_path.hash(), Timestamp::now())
        .await
        .unwrap();
    let found = scan_all(
        |after: Option<nixcache_protocol::StorePathHash>| async move {
            db.uploaded_narinfos_without_nar(after.as_ref(), 2).await.unwrap()
        },
        |r| *r.info.store_path.hash(),
    )
    .await;
    let mut want = lost.to_vec();
    want.sort_by_key(|r| r.info.store_path.hash().to_string());
    assert_eq!(found, want);
}
