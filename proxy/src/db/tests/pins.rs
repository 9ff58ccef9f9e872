//! Pins: stored, replaced, listed by hash, deleted; a pinned narinfo is not evicted by
//! `evict_unpinned_narinfo` (while `evict_narinfo`, for fsck and the scrub, still does).

use super::{record, store_path};
use crate::db::{MetadataStore, PinRecord, Timestamp};

fn pin(n: u8, closure: bool, declared: bool) -> PinRecord {
    PinRecord {
        path: store_path(n, "hello-2.12"),
        closure,
        declared,
        created_at: Timestamp::from_unix_ms(1_700_000_000_000 + i64::from(n) * 1000),
    }
}

pub(super) async fn pins(db: &dyn MetadataStore) {
    assert_eq!(db.pins().await.unwrap(), vec![]);
    let (a, b) = (pin(1, true, false), pin(2, false, true));
    db.put_pin(&b).await.unwrap();
    db.put_pin(&a).await.unwrap();
    let mut both = vec![a.clone(), b.clone()];
    both.sort_by_key(|p| p.path.hash().to_string());
    assert_eq!(db.pins().await.unwrap(), both);

    // Replaced, not doubled.
    let a2 = pin(1, false, true);
    db.put_pin(&a2).await.unwrap();
    let listed = db.pins().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&a2), "{listed:?}");

    assert!(db.delete_pin(b.path.hash()).await.unwrap());
    assert!(!db.delete_pin(b.path.hash()).await.unwrap());
    assert_eq!(db.pins().await.unwrap(), vec![a2.clone()]);

    // A pinned narinfo stays live; an unpinned one goes.
    let (pinned, free) = (record(1, vec![]), record(3, vec![]));
    db.put_narinfo(&pinned).await.unwrap();
    db.put_narinfo(&free).await.unwrap();
    let now = Timestamp::now();
    let later = now + std::time::Duration::from_secs(60);
    let pinned_hash = pinned.info.store_path.hash();
    let free_hash = free.info.store_path.hash();
    assert!(!db.evict_unpinned_narinfo(pinned_hash, now, later).await.unwrap());
    assert!(db.get_narinfo(pinned_hash).await.unwrap().is_some());
    // Accessed (or put) since `accessed_before`: kept.
    let long_ago = Timestamp::from_unix_ms(1_000);
    assert!(!db.evict_unpinned_narinfo(free_hash, now, long_ago).await.unwrap());
    assert!(db.evict_unpinned_narinfo(free_hash, now, later).await.unwrap());
    assert!(db.get_narinfo(free_hash).await.unwrap().is_none());
    // Not live any more: nothing to evict.
    assert!(!db.evict_unpinned_narinfo(free_hash, now, later).await.unwrap());
    // fsck and the scrub evict a broken uploaded path whatever pins say.
    assert!(db.evict_narinfo(pinned_hash, now).await.unwrap());
}
