#![allow(clippy::unwrap_used)]

use nixcache_protocol::{Compression, NarFile, NarInfo, Sha256Hash, StorePath, StorePathHash};

use super::*;
use crate::db::{connect, NarInfoRecord};

fn path(n: u8) -> StorePath {
    StorePath::new(StorePathHash([n; 20]), &format!("p-{n}")).unwrap()
}

fn request(n: u8, closure: bool) -> PinRequest {
    PinRequest {
        path: path(n),
        closure,
    }
}

/// A narinfo of path `n` referencing `refs`, of `100 * n` bytes.
fn record(n: u8, refs: &[u8]) -> NarInfoRecord {
    let file = NarFile {
        hash: Sha256Hash::digest(&[n]),
        compression: Compression::None,
    };
    NarInfoRecord {
        info: NarInfo {
            store_path: path(n),
            url: format!("http://up.example/{}", file.url()),
            compression: Compression::None,
            file_hash: None,
            file_size: None,
            nar_hash: file.hash,
            nar_size: 100 * u64::from(n),
            references: refs.iter().map(|&r| path(r)).collect(),
            deriver: None,
            sigs: vec![],
            ca: None,
        },
        nar_file: file,
        proxy_sig: None,
    }
}

async fn sqlite(dir: &std::path::Path) -> std::sync::Arc<dyn MetadataStore> {
    connect(&format!("sqlite://{}/db.sqlite", dir.display()))
        .await
        .unwrap()
}

#[tokio::test]
async fn declared_pins_follow_their_list_and_are_not_removed_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(dir.path()).await;
    add(&*db, &request(1, false)).await.unwrap();
    add(&*db, &request(2, true)).await.unwrap();
    // 2 becomes declared (as a path pin), 3 is new.
    let synced = sync_declared(&*db, &[request(2, false), request(3, true)])
        .await
        .unwrap();
    assert_eq!(synced, Synced { added: 2, removed: 0 });
    assert_eq!(
        sync_declared(&*db, &[request(2, false), request(3, true)])
            .await
            .unwrap(),
        Synced::default()
    );
    let err = remove(&*db, path(2).hash()).await.unwrap_err();
    assert!(matches!(err, PinError::Declared { .. }), "{err}");
    assert!(err.to_string().contains("spec.pins"), "{err}");
    assert!(matches!(
        add(&*db, &request(3, false)).await,
        Err(PinError::Declared { .. })
    ));
    // Dropped from the list: gone; the pin made by hand stays.
    assert_eq!(
        sync_declared(&*db, &[request(3, true)]).await.unwrap(),
        Synced { added: 0, removed: 1 }
    );
    let pins: Vec<(u8, bool, bool)> = db
        .pins()
        .await
        .unwrap()
        .iter()
        .map(|p| (p.path.hash().0[0], p.closure, p.declared))
        .collect();
    assert_eq!(pins, vec![(1, false, false), (3, true, true)]);
    assert_eq!(db.count_pins().await.unwrap(), 2);
    // Asked again: a path pin becomes a closure pin, a closure pin stays one.
    let upgraded = add(&*db, &request(1, true)).await.unwrap();
    assert!(upgraded.existed && upgraded.pin.closure, "{upgraded:?}");
    let again = add(&*db, &request(1, false)).await.unwrap();
    assert!(again.existed && again.pin.closure, "{again:?}");
    assert_eq!(remove(&*db, path(1).hash()).await.unwrap().path, path(1));
    assert!(matches!(
        remove(&*db, path(1).hash()).await,
        Err(PinError::NotPinned(_))
    ));
}

#[tokio::test]
async fn closures_follow_cached_references_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(dir.path()).await;
    // 1 -> 2 -> 3 -> 1 (a cycle), 2 -> 9 (not cached); 4 -> 5; 6 -> 7; 8 -> 4.
    for (n, refs) in [
        (1, &[2][..]),
        (2, &[3, 9]),
        (3, &[1]),
        (4, &[5]),
        (5, &[]),
        (6, &[7]),
        (7, &[]),
        (8, &[4]),
    ] {
        db.put_narinfo(&record(n, refs)).await.unwrap();
    }
    let pin = |n: u8, closure: bool| PinRecord {
        path: path(n),
        closure,
        declared: false,
        created_at: crate::db::Timestamp::now(),
    };
    // 6 pinned alone and reached by no closure; 4 pinned alone though 4's closure is not held.
    let held = closure_of(&*db, &[pin(4, false), pin(1, true), pin(6, false)])
        .await
        .unwrap();
    let mut hashes: Vec<u8> = held.paths.iter().map(|h| h.0[0]).collect();
    hashes.sort();
    assert_eq!(hashes, vec![1, 2, 3, 4, 6, 9]);
    assert_eq!(held.cached, 5);
    assert_eq!(held.bytes, 100 * (1 + 2 + 3 + 4 + 6));
    // A path pinned alone that a closure reaches is walked on.
    let held = closure_of(&*db, &[pin(4, false), pin(8, true)]).await.unwrap();
    let mut hashes: Vec<u8> = held.paths.iter().map(|h| h.0[0]).collect();
    hashes.sort();
    assert_eq!(hashes, vec![4, 5, 8]);
    assert_eq!(held.cached, 3);
}
