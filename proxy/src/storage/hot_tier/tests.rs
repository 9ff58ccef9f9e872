//! The hot tier over a real S3 server (s3s-fs): what it keeps, what it serves, and that it
//! never serves bytes other than the store's. The shared conformance suite runs on it too
//! (`storage::tests::on_s3_with_hot_tier`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use nixcache_protocol::{Compression, NarFile, Sha256Hash};
use nixcache_testsupport::s3::S3sFs;

use super::metrics::{TierRead, TierReadLabels};
use super::{HotTier, HotTierConfig};
use crate::storage::{
    local::collect,
    tests::{chunks, s3_store},
    BlobKey, BlobStore, ByteRange, StorageError,
};

const MIB: usize = 1 << 20;

/// A NAR's key for `data`: named by its hash, as the tier requires to keep it.
fn nar_key(data: &[u8]) -> BlobKey {
    BlobKey::for_nar(&NarFile {
        hash: Sha256Hash::digest(data),
        compression: Compression::Xz,
    })
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 31 + u64::from(seed) * 7 % 251) as u8 ^ seed)
        .collect()
}

struct Bed {
    _server: S3sFs,
    cold: Arc<dyn BlobStore>,
    dir: tempfile::TempDir,
    tier: HotTier,
}

async fn bed(max_bytes: u64) -> Option<Bed> {
    let server = S3sFs::start().await.unwrap()?;
    let cold: Arc<dyn BlobStore> = Arc::new(s3_store(&server, "nixcache/").await);
    let dir = tempfile::tempdir().unwrap();
    let tier = open(&dir, &cold, max_bytes).await;
    Some(Bed {
        _server: server,
        cold,
        dir,
        tier,
    })
}

async fn open(dir: &tempfile::TempDir, cold: &Arc<dyn BlobStore>, max_bytes: u64) -> HotTier {
    let config = HotTierConfig {
        dir: dir.path().to_path_buf(),
        max_bytes,
        metrics: Default::default(),
    };
    HotTier::open(&config, Arc::clone(cold)).await.unwrap()
}

/// Stores `data` through the tier, reads it whole, and waits until the tier holds it.
async fn stored_and_read(tier: &HotTier, data: &[u8]) -> BlobKey {
    let k = nar_key(data);
    tier.put_stream(&k, chunks(data)).await.unwrap();
    assert!(!tier.holds(&k), "a write goes to the store only");
    let read = tier.get(&k, None).await.unwrap();
    assert_eq!(collect(read.body).await.unwrap(), data);
    settled(tier, &k, true).await;
    k
}

fn reads(tier: &HotTier, result: TierRead) -> u64 {
    tier.shared
        .metrics
        .reads
        .get_or_create(&TierReadLabels { result })
        .get()
}

async fn settled(tier: &HotTier, k: &BlobKey, held: bool) {
    for _ in 0..500 {
        if tier.holds(k) == held {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the tier should {}hold {k}", if held { "" } else { "not " });
}

fn files_in(dir: &std::path::Path) -> usize {
    walkdir(dir).len()
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walkdir(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn serves_what_it_holds_with_ranges_and_sizes() {
    let Some(bed) = bed(64 * MIB as u64).await else {
        return;
    };
    let body = data(1, 3 * MIB + 5);
    let k = stored_and_read(&bed.tier, &body).await;
    // Gone from the store behind the tier's back: what is read now comes from the tier.
    assert!(bed.cold.delete(&k).await.unwrap());
    let whole = bed.tier.get(&k, None).await.unwrap();
    assert_eq!(whole.size, body.len() as u64);
    assert_eq!(collect(whole.body).await.unwrap(), body);
    let range = ByteRange {
        start: 10,
        end: 2 * MIB as u64,
    };
    let part = bed.tier.get(&k, Some(range)).await.unwrap();
    assert_eq!(part.size, body.len() as u64);
    assert_eq!(collect(part.body).await.unwrap(), &body[10..=2 * MIB]);
    let past = ByteRange {
        start: 0,
        end: body.len() as u64,
    };
    assert!(matches!(
        bed.tier.get(&k, Some(past)).await,
        Err(StorageError::BadRange { size, .. }) if size == body.len() as u64
    ));
    assert_eq!(bed.tier.usage(), (body.len() as u64, 1));
    // A delete reaches the tier as well as the store.
    assert!(!bed.tier.delete(&k).await.unwrap(), "the store had it no more");
    assert!(!bed.tier.holds(&k));
    assert!(matches!(
        bed.tier.get(&k, None).await,
        Err(StorageError::NotFound(_))
    ));
    assert_eq!(files_in(&bed.dir.path().join("nar")), 0);
}

#[tokio::test]
async fn a_read_survives_the_eviction_of_its_file() {
    // Eight 1 MiB NARs fill an 8 MiB tier; reading eight more evicts the first while it is read.
    let Some(bed) = bed(8 * MIB as u64).await else {
        return;
    };
    let first = data(0, MIB);
    let k = stored_and_read(&bed.tier, &first).await;
    let mut reading = bed.tier.get(&k, None).await.unwrap().body;
    let mut got = reading.next().await.unwrap().unwrap().to_vec();
    for seed in 1..=8 {
        stored_and_read(&bed.tier, &data(seed, MIB)).await;
    }
    assert!(!bed.tier.holds(&k), "the least recently used went");
    assert_eq!(bed.tier.usage(), (8 * MIB as u64, 8));
    while let Some(chunk) = reading.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got, first, "the evicted file is read to its end");
    // Too large a NAR (above an eighth) is served but not kept.
    let big = data(9, MIB + 1);
    let big_key = nar_key(&big);
    bed.tier.put_stream(&big_key, chunks(&big)).await.unwrap();
    let read = bed.tier.get(&big_key, None).await.unwrap();
    assert_eq!(collect(read.body).await.unwrap(), big);
    assert!(!bed.tier.holds(&big_key));
}

#[tokio::test]
async fn a_changed_file_in_the_tier_is_never_served() {
    let Some(bed) = bed(64 * MIB as u64).await else {
        return;
    };
    let body = data(2, MIB);
    let k = stored_and_read(&bed.tier, &body).await;
    let file = walkdir(&bed.dir.path().join("nar")).pop().unwrap();
    std::fs::write(&file, vec![0u8; body.len()]).unwrap(); // same size, other bytes
    let read = bed.tier.get(&k, None).await.unwrap();
    assert_eq!(
        collect(read.body).await.unwrap(),
        body,
        "read from the store instead"
    );
    settled(&bed.tier, &k, true).await; // and copied again, whole
    let file = walkdir(&bed.dir.path().join("nar")).pop().unwrap();
    assert_eq!(std::fs::read(file).unwrap(), body);
}

#[tokio::test]
async fn only_bytes_that_hash_to_their_name_are_kept() {
    let Some(bed) = bed(64 * MIB as u64).await else {
        return;
    };
    let (body, other) = (data(3, MIB), data(4, MIB));
    let k = nar_key(&other); // the store holds other bytes than the name says
    bed.cold.put_stream(&k, chunks(&body)).await.unwrap();
    let read = bed.tier.get(&k, None).await.unwrap();
    assert_eq!(
        collect(read.body).await.unwrap(),
        body,
        "the store's bytes, as they are"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!bed.tier.holds(&k));
    assert_eq!(bed.tier.usage(), (0, 0));
    assert_eq!(files_in(bed.dir.path()), 0, "no file kept, no temp file left");
    // Not copied again (it would evict what is kept for nothing): read from the store only.
    assert_eq!(reads(&bed.tier, TierRead::Copied), 1);
    let read = bed.tier.get(&k, None).await.unwrap();
    assert_eq!(collect(read.body).await.unwrap(), body);
    assert_eq!(
        (
            reads(&bed.tier, TierRead::Copied),
            reads(&bed.tier, TierRead::Miss)
        ),
        (1, 1)
    );
}

#[tokio::test]
async fn a_client_that_stops_early_leaves_nothing() {
    let Some(bed) = bed(64 * MIB as u64).await else {
        return;
    };
    let body = data(5, 4 * MIB);
    let k = nar_key(&body);
    bed.tier.put_stream(&k, chunks(&body)).await.unwrap();
    let mut read = bed.tier.get(&k, None).await.unwrap().body;
    read.next().await.unwrap().unwrap();
    drop(read);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bed.tier.usage(), (0, 0));
    assert_eq!(files_in(bed.dir.path()), 0);
    // Concurrent readers of a miss: each gets every byte, and one copy is kept.
    let reads = (0..3).map(|_| async { collect(bed.tier.get(&k, None).await.unwrap().body).await.unwrap() });
    for got in futures::future::join_all(reads).await {
        assert_eq!(got, body);
    }
    settled(&bed.tier, &k, true).await;
    assert_eq!(bed.tier.usage(), (body.len() as u64, 1));
}

#[tokio::test]
async fn two_replicas_and_a_restart() {
    let Some(bed) = bed(64 * MIB as u64).await else {
        return;
    };
    let other_dir = tempfile::tempdir().unwrap();
    let other = open(&other_dir, &bed.cold, 64 * MIB as u64).await;
    let (a, b) = (data(6, MIB), data(7, MIB));
    let (ka, kb) = (
        stored_and_read(&bed.tier, &a).await,
        stored_and_read(&bed.tier, &b).await,
    );
    for (k, body) in [(&ka, &a), (&kb, &b)] {
        let read = other.get(k, None).await.unwrap();
        assert_eq!(&collect(read.body).await.unwrap(), body);
        settled(&other, k, true).await;
    }
    // One replica deletes a; the other drops it at its next sweep, and keeps b. (The cache
    // asks its database; here the store stands in for it.)
    assert!(bed.tier.delete(&ka).await.unwrap());
    assert!(other.holds(&ka), "not seen yet");
    let recorded = |nar: NarFile| {
        let cold = Arc::clone(&bed.cold);
        async move { Ok::<_, StorageError>(cold.stat(&BlobKey::for_nar(&nar)).await?.is_some()) }
    };
    assert_eq!(other.sweep(recorded).await.unwrap(), 1);
    assert!(!other.holds(&ka) && other.holds(&kb));
    assert!(matches!(
        other.get(&ka, None).await,
        Err(StorageError::NotFound(_))
    ));
    // A wiped tier: read from the store again, and copied again.
    std::fs::remove_dir_all(other_dir.path().join("nar")).unwrap();
    let read = other.get(&kb, None).await.unwrap();
    assert_eq!(collect(read.body).await.unwrap(), b);
    // A restart starts empty, and clears what the last run left.
    other.close().await;
    drop(other);
    let reopened = open(&other_dir, &bed.cold, 64 * MIB as u64).await;
    assert!(!reopened.holds(&kb));
    reopened.close().await;
    assert_eq!(files_in(other_dir.path()), 0);
    let names: Vec<_> = std::fs::read_dir(other_dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 2, "nar and tmp only: {names:?}");
}
