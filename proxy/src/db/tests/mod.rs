//! The conformance suite every `MetadataStore` must pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use nixcache_protocol::{Compression, NarFile, NarInfo, Sha256Hash, SigningKey, StorePath};

use std::time::Duration;

use super::{LeaseClaim, LeaseKey, MetadataStore, NarInfoRecord, NarRecord, ProxySignature, SqliteMetadata};

mod audit;
mod engines;
mod lru;
mod pins;
mod side_files;
mod upkeep;
mod verified;

pub(super) fn store_path(n: u8, name: &str) -> StorePath {
    let hash = nixcache_protocol::StorePathHash([n; 20]);
    StorePath::new(hash, name).unwrap()
}

pub(super) fn record(n: u8, refs: Vec<StorePath>) -> NarInfoRecord {
    let file_hash = Sha256Hash::digest(&[n, 1]);
    let key = SigningKey::generate("upstream-1").unwrap();
    let mut info = NarInfo {
        store_path: store_path(n, "hello-2.12"),
        url: format!("https://up.example/nar/{}.nar.xz", file_hash.to_nixbase32()),
        compression: Compression::Xz,
        file_hash: Some(file_hash),
        file_size: Some(1234),
        nar_hash: Sha256Hash::digest(&[n, 2]),
        nar_size: 5678,
        references: refs,
        deriver: Some(store_path(n + 100, "hello-2.12.drv")),
        sigs: vec![],
        ca: None,
    };
    info.add_signature(&key);
    let nar_file = NarFile {
        hash: file_hash,
        compression: Compression::Xz,
    };
    NarInfoRecord {
        info,
        nar_file,
        proxy_sig: None,
    }
}

/// Narinfos and NAR rows: stored, replaced, signed, deleted.
pub(super) async fn narinfos_and_nars(db: &dyn MetadataStore) {
    db.ping().await.unwrap();
    let a = record(1, vec![]);
    let b = record(2, vec![store_path(1, "hello-2.12"), store_path(2, "hello-2.12")]);
    assert_eq!(db.get_narinfo(a.info.store_path.hash()).await.unwrap(), None);

    db.put_narinfo(&a).await.unwrap();
    db.put_narinfo(&b).await.unwrap();
    assert_eq!(
        db.get_narinfo(a.info.store_path.hash()).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        db.get_narinfo(b.info.store_path.hash()).await.unwrap(),
        Some(b.clone())
    );
    assert_eq!(db.narinfo_for_nar(&b.nar_file).await.unwrap(), Some(b.clone()));

    // Replacing keeps one row per store path hash.
    let mut b2 = b.clone();
    b2.info.ca = Some("fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s".into());
    db.put_narinfo(&b2).await.unwrap();
    assert_eq!(
        db.get_narinfo(b.info.store_path.hash()).await.unwrap(),
        Some(b2.clone())
    );

    let key = SigningKey::generate("proxy-1").unwrap();
    let sig = ProxySignature {
        public_key: key.public_key().to_string(),
        sig: key.sign("x"),
    };
    db.set_proxy_signature(a.info.store_path.hash(), &sig)
        .await
        .unwrap();
    let got = db.get_narinfo(a.info.store_path.hash()).await.unwrap().unwrap();
    assert_eq!(got.proxy_sig, Some(sig));

    assert_eq!(db.get_nar(&a.nar_file).await.unwrap(), None);
    let nar = NarRecord {
        nar_file: a.nar_file.clone(),
        file_size: 1234,
        nar_hash: a.info.nar_hash,
    };
    db.put_nar(&nar).await.unwrap();
    assert_eq!(db.get_nar(&a.nar_file).await.unwrap(), Some(nar));
    db.delete_nar(&a.nar_file).await.unwrap();
    assert_eq!(db.get_nar(&a.nar_file).await.unwrap(), None);
    // The narinfo outlives its NAR file (the NAR is fetched again on demand).
    assert!(db.get_narinfo(a.info.store_path.hash()).await.unwrap().is_some());
    db.delete_narinfo(a.info.store_path.hash()).await.unwrap();
    assert_eq!(db.get_narinfo(a.info.store_path.hash()).await.unwrap(), None);
    assert!(db.get_narinfo(b.info.store_path.hash()).await.unwrap().is_some());
    nar_from_an_upstream_first(db).await;
}

/// A NAR named by an uploaded narinfo (relative URL) and by an evicted upstream one: the
/// upstream's is found, so the NAR is fetched again rather than refused as gone.
async fn nar_from_an_upstream_first(db: &dyn MetadataStore) {
    let upstream = record(3, vec![]);
    let mut uploaded = record(4, vec![]);
    uploaded.nar_file = upstream.nar_file.clone();
    uploaded.info.url = format!("nar/{}", upstream.nar_file.file_name());
    db.put_narinfo(&uploaded).await.unwrap();
    db.put_narinfo(&upstream).await.unwrap();
    let hash = upstream.info.store_path.hash();
    assert!(db.evict_narinfo(hash, super::Timestamp::now()).await.unwrap());
    assert_eq!(
        db.narinfo_for_nar(&upstream.nar_file).await.unwrap(),
        Some(upstream.clone())
    );
    db.delete_narinfo(hash).await.unwrap();
    assert_eq!(
        db.narinfo_for_nar(&upstream.nar_file).await.unwrap(),
        Some(uploaded.clone())
    );
    db.delete_narinfo(uploaded.info.store_path.hash()).await.unwrap();
}

pub(super) async fn leases(db: &dyn MetadataStore) {
    let key = LeaseKey::nar(&record(7, vec![]).nar_file);
    let other = LeaseKey::narinfo(&nixcache_protocol::StorePathHash([7; 20]));
    let long = Duration::from_secs(60);
    assert_eq!(db.get_lease(&key).await.unwrap(), None);
    assert_eq!(
        db.claim_lease(&key, "a", "http://a:1", long).await.unwrap(),
        LeaseClaim::Acquired
    );
    // Claiming again is re-entrant for the holder, refused for anyone else.
    assert_eq!(
        db.claim_lease(&key, "a", "http://a:1", long).await.unwrap(),
        LeaseClaim::Acquired
    );
    let LeaseClaim::Held(held) = db.claim_lease(&key, "b", "http://b:1", long).await.unwrap() else {
        panic!("b took a's lease");
    };
    assert_eq!((held.holder.as_str(), held.address.as_str()), ("a", "http://a:1"));
    assert!(held.expires_at > super::Timestamp::now() + Duration::from_secs(50));
    // Leases are independent per key.
    assert_eq!(
        db.claim_lease(&other, "b", "http://b:1", long).await.unwrap(),
        LeaseClaim::Acquired
    );

    assert!(db.renew_lease(&key, "a", long).await.unwrap());
    assert!(!db.renew_lease(&key, "b", long).await.unwrap());
    // Only the holder releases.
    db.release_lease(&key, "b").await.unwrap();
    assert_eq!(db.get_lease(&key).await.unwrap().unwrap().holder, "a");
    db.release_lease(&key, "a").await.unwrap();
    assert_eq!(db.get_lease(&key).await.unwrap(), None);

    // An expired lease is taken over, and its old holder can no longer renew it.
    let short = Duration::from_millis(1);
    assert_eq!(
        db.claim_lease(&key, "a", "http://a:1", short).await.unwrap(),
        LeaseClaim::Acquired
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        db.claim_lease(&key, "b", "http://b:1", long).await.unwrap(),
        LeaseClaim::Acquired
    );
    assert!(!db.renew_lease(&key, "a", long).await.unwrap());
    assert_eq!(db.get_lease(&key).await.unwrap().unwrap().address, "http://b:1");
    leases_claimed_if_free(db, &key).await;
}

/// `claim_lease_if_free` decides as `claim_lease` does. `key` is b's, for a minute.
async fn leases_claimed_if_free(db: &dyn MetadataStore, key: &LeaseKey) {
    let long = Duration::from_secs(60);
    let LeaseClaim::Held(held) = db
        .claim_lease_if_free(key, "c", "http://c:1", long)
        .await
        .unwrap()
    else {
        panic!("c took b's live lease");
    };
    assert_eq!(held.holder, "b");
    assert_eq!(
        db.claim_lease_if_free(key, "b", "http://b:2", long)
            .await
            .unwrap(),
        LeaseClaim::Acquired
    );
    assert_eq!(db.get_lease(key).await.unwrap().unwrap().address, "http://b:2");
    db.release_lease(key, "b").await.unwrap();
    assert_eq!(
        db.claim_lease_if_free(key, "c", "http://c:1", Duration::from_millis(1))
            .await
            .unwrap(),
        LeaseClaim::Acquired
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        db.claim_lease_if_free(key, "d", "", long).await.unwrap(),
        LeaseClaim::Acquired
    );
    db.release_lease(key, "d").await.unwrap();
}

/// A replica polling a lease another holds only reads: on SQLite it gets its answer while
/// another connection holds the write lock (a claim would wait for it, up to the busy timeout).
#[tokio::test]
async fn polling_a_held_lease_does_not_write() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/db.sqlite", dir.path().display());
    let db = SqliteMetadata::open(&url).await.unwrap();
    let key = LeaseKey::nar(&record(9, vec![]).nar_file);
    let long = Duration::from_secs(60);
    assert_eq!(
        db.claim_lease(&key, "a", "http://a:1", long).await.unwrap(),
        LeaseClaim::Acquired
    );
    let mut writer = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut writer).await.unwrap();
    let polled = tokio::time::timeout(
        Duration::from_secs(3),
        db.claim_lease_if_free(&key, "b", "http://b:1", long),
    )
    .await;
    sqlx::query("ROLLBACK").execute(&mut writer).await.unwrap();
    let Ok(Ok(LeaseClaim::Held(held))) = polled else {
        panic!("polling the lease waited for the writer: {polled:?}");
    };
    assert_eq!(held.holder, "a");
}

#[tokio::test]
async fn sqlite_keeps_its_data_when_opened_again() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/db.sqlite", dir.path().display());
    narinfos_and_nars(&SqliteMetadata::open(&url).await.unwrap()).await;
    // Opening again re-applies nothing and keeps the data.
    let again = SqliteMetadata::open(&url).await.unwrap();
    assert!(again
        .get_narinfo(&nixcache_protocol::StorePathHash([2; 20]))
        .await
        .unwrap()
        .is_some());
}

#[test]
fn database_urls_are_redacted_in_debug_output() {
    // The `--database-url` flag's own Debug is tested in `cli`.
    let url = "postgres://nixcache:hunter2@db:5432/nixcache";
    let err = super::DbError::NotMigrated {
        url: crate::redact::url(url),
        pending: 2,
    };
    assert!(!format!("{err} {err:?}").contains("hunter2"));
}
