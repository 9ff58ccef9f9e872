//! The conformance suite every `BlobStore` must pass: one test per property and backend
//! (`on_local::…`, `on_s3::…`), each on a fresh store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use bytes::Bytes;
use futures::stream;

use nixcache_testsupport::s3::{S3sFs, ACCESS_KEY, SECRET_KEY};

use super::{
    local::collect, BlobKey, BlobStore, ByteRange, HotTier, HotTierConfig, LocalStore, ReadAhead, S3Config,
    S3Store, StorageError,
};

pub(super) fn key(n: u8) -> BlobKey {
    let hash = nixcache_protocol::Sha256Hash::digest(&[n]);
    BlobKey::for_nar(&nixcache_protocol::NarFile {
        hash,
        compression: nixcache_protocol::Compression::Xz,
    })
}

/// Settings for `bucket` on the test server, with its credentials.
pub(super) fn s3_config(server: &S3sFs, bucket: &str, prefix: &str) -> S3Config {
    S3Config {
        bucket: bucket.into(),
        endpoint: Some(server.endpoint()),
        region: Some("us-east-1".into()),
        path_style: true,
        prefix: prefix.into(),
        credentials: Some(aws_sdk_s3::config::Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            None,
            None,
            "nixcache-test",
        )),
        timeouts: Default::default(),
        read_ahead: Default::default(),
    }
}

/// A store on a new bucket of the test server.
pub(super) async fn s3_store(server: &S3sFs, prefix: &str) -> S3Store {
    s3_store_reading(server, prefix, Default::default()).await
}

/// A store on a new bucket of the test server, reading large objects as `read_ahead` says.
pub(super) async fn s3_store_reading(server: &S3sFs, prefix: &str, read_ahead: ReadAhead) -> S3Store {
    let bucket = server.create_bucket().unwrap();
    let config = S3Config {
        read_ahead,
        ..s3_config(server, &bucket, prefix)
    };
    S3Store::connect(&config).await.unwrap()
}

pub(super) fn chunks(data: &[u8]) -> super::ByteStream {
    let parts: Vec<std::io::Result<Bytes>> =
        data.chunks(7000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    Box::pin(stream::iter(parts))
}

/// Every property `fn(store, staging dir)` as a test on each backend. After each, no temp file
/// (local) or open multipart upload (S3) is left over.
macro_rules! conformance {
    ($($property:ident),* $(,)?) => {
        mod on_local {
            $(
                #[tokio::test]
                async fn $property() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::LocalStore::open(dir.path().join("nar"), dir.path().join("tmp"))
                        .await
                        .unwrap();
                    super::$property(&store, &dir.path().join("tmp")).await;
                    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
                }
            )*
        }
        mod on_s3 {
            $(
                #[tokio::test]
                async fn $property() {
                    let Some(server) = super::S3sFs::start().await.unwrap() else {
                        return;
                    };
                    let store = super::s3_store(&server, "nixcache/").await;
                    let staging = tempfile::tempdir().unwrap();
                    super::$property(&store, staging.path()).await;
                    assert_eq!(
                        server.open_uploads().unwrap(),
                        0,
                        "every multipart upload completed or aborted"
                    );
                }
            )*
        }
        // Through a replica's hot tier (what it keeps is tested in `hot_tier::tests`: these
        // keys do not hash to their bytes, so the tier only passes them on).
        mod on_s3_with_hot_tier {
            $(
                #[tokio::test]
                async fn $property() {
                    let Some(server) = super::S3sFs::start().await.unwrap() else {
                        return;
                    };
                    let cold = std::sync::Arc::new(super::s3_store(&server, "nixcache/").await);
                    let dir = tempfile::tempdir().unwrap();
                    let config = super::HotTierConfig { dir: dir.path().into(), max_bytes: 256 << 20, metrics: Default::default() };
                    let store = super::HotTier::open(&config, cold).await.unwrap();
                    let staging = tempfile::tempdir().unwrap();
                    super::$property(&store, staging.path()).await;
                }
            )*
        }
        // Large reads in 1 MiB parts, 3 GETs at once, with room for only two parts ahead: both
        // kinds of part (read ahead, read in turn) and every boundary case show up.
        mod on_s3_in_small_parts {
            $(
                #[tokio::test]
                async fn $property() {
                    let Some(server) = super::S3sFs::start().await.unwrap() else {
                        return;
                    };
                    let read_ahead = super::ReadAhead::new(3, 1 << 20, 2 << 20);
                    let store = super::s3_store_reading(&server, "nixcache/", read_ahead).await;
                    let staging = tempfile::tempdir().unwrap();
                    super::$property(&store, staging.path()).await;
                }
            )*
        }
    };
}

conformance!(
    absent_objects,
    whole_objects_and_ranges,
    a_failed_put_leaves_nothing,
    overwrite_and_delete,
    large_objects,
    side_files_live_beside_nars,
    listings_name_every_object,
);

async fn absent_objects(store: &dyn BlobStore, _: &Path) {
    let k = key(1);
    assert_eq!(store.stat(&k).await.unwrap(), None);
    assert!(matches!(
        store.get(&k, None).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(!store.delete(&k).await.unwrap());
    store.ping().await.unwrap();
}

async fn whole_objects_and_ranges(store: &dyn BlobStore, _: &Path) {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let k = key(1);
    assert_eq!(
        store.put_stream(&k, chunks(&data)).await.unwrap(),
        data.len() as u64
    );
    assert_eq!(store.stat(&k).await.unwrap(), Some(data.len() as u64));
    let whole = store.get(&k, None).await.unwrap();
    assert_eq!(whole.size, data.len() as u64);
    assert_eq!(collect(whole.body).await.unwrap(), data);

    let part = store
        .get(
            &k,
            Some(ByteRange {
                start: 10,
                end: 99_999,
            }),
        )
        .await
        .unwrap();
    assert_eq!(collect(part.body).await.unwrap(), &data[10..]);
    let one = store.get(&k, Some(ByteRange { start: 5, end: 5 })).await.unwrap();
    assert_eq!(collect(one.body).await.unwrap(), &data[5..6]);
    let past = store
        .get(
            &k,
            Some(ByteRange {
                start: 0,
                end: 100_000,
            }),
        )
        .await;
    assert!(
        matches!(past, Err(StorageError::BadRange { size: 100_000, .. })),
        "range past the end must be refused"
    );
    let beyond = store
        .get(
            &k,
            Some(ByteRange {
                start: 100_000,
                end: 100_005,
            }),
        )
        .await;
    assert!(
        matches!(beyond, Err(StorageError::BadRange { size: 100_000, .. })),
        "range starting past the end must be refused"
    );
}

async fn a_failed_put_leaves_nothing(store: &dyn BlobStore, _: &Path) {
    // A failing body leaves nothing behind, and the old object stays intact.
    let k = key(1);
    store.put_stream(&k, chunks(b"old")).await.unwrap();
    let k2 = key(2);
    let failing: super::ByteStream = Box::pin(stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(std::io::Error::other("upstream cut off")),
    ]));
    assert!(store.put_stream(&k2, failing).await.is_err());
    assert_eq!(store.stat(&k2).await.unwrap(), None);
    let failing: super::ByteStream = Box::pin(stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(std::io::Error::other("upstream cut off")),
    ]));
    assert!(store.put_stream(&k, failing).await.is_err());
    assert_eq!(
        collect(store.get(&k, None).await.unwrap().body).await.unwrap(),
        b"old"
    );
    assert!(store.delete(&k).await.unwrap());
}

async fn overwrite_and_delete(store: &dyn BlobStore, _: &Path) {
    // Overwrite replaces atomically (a large object by a small one); delete reports whether
    // something went.
    let k = key(1);
    let large: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    store.put_stream(&k, chunks(&large)).await.unwrap();
    store.put_stream(&k, chunks(b"new")).await.unwrap();
    assert_eq!(store.stat(&k).await.unwrap(), Some(3));
    assert_eq!(
        collect(store.get(&k, None).await.unwrap().body).await.unwrap(),
        b"new"
    );
    assert!(store.delete(&k).await.unwrap());
    assert!(!store.delete(&k).await.unwrap());
    assert_eq!(store.stat(&k).await.unwrap(), None);
    store.ping().await.unwrap();
}

async fn side_files_live_beside_nars(store: &dyn BlobStore, _: &Path) {
    // Listings and logs (`<hash>.ls`, `log/<drv>`) are objects like NARs, apart from them.
    use nixcache_protocol::SideFile;
    let hash = "7qxb8wbwqha95lbfrcj97j6fb8wbywa4";
    let listing = BlobKey::for_side_file(&SideFile::parse(&format!("{hash}.ls")).unwrap());
    let log = BlobKey::for_side_file(&SideFile::parse(&format!("log/{hash}-hello-2.12.drv")).unwrap());
    assert_eq!(log.as_str(), format!("log/{hash}-hello-2.12.drv"));
    store
        .put_stream(&listing, chunks(b"{\"version\":1}"))
        .await
        .unwrap();
    store.put_stream(&log, chunks(b"building\n")).await.unwrap();
    store.put_stream(&key(1), chunks(b"nar")).await.unwrap();
    assert_eq!(store.stat(&listing).await.unwrap(), Some(13));
    assert_eq!(
        collect(store.get(&log, None).await.unwrap().body).await.unwrap(),
        b"building\n"
    );
    assert!(store.delete(&log).await.unwrap());
    assert_eq!(store.stat(&log).await.unwrap(), None);
    assert_eq!(store.stat(&listing).await.unwrap(), Some(13));
    assert_eq!(store.stat(&key(1)).await.unwrap(), Some(3));
    // Build traces of both layouts, under keys a row names again for GC.
    use nixcache_protocol::BuildTraceKey;
    let hex = "d94f7af9eb726a2f3d6a5b85f1d13d7c7d2683433f442535b28f86ed88635808";
    for path in [
        format!("realisations/sha256:{hex}!out.doi"),
        format!("build-trace-v2/{hash}-hello-2.12.drv/dev.doi"),
    ] {
        let trace = BlobKey::for_build_trace(&BuildTraceKey::parse(&path).unwrap());
        assert_eq!(BlobKey::for_side_file_row(trace.as_str()), Some(trace.clone()));
        store.put_stream(&trace, chunks(b"{}")).await.unwrap();
        assert_eq!(store.stat(&trace).await.unwrap(), Some(2));
        assert!(store.delete(&trace).await.unwrap());
    }
    assert_eq!(
        BlobKey::for_side_file_row(listing.as_str()),
        Some(listing.clone())
    );
    for row in ["../x.ls", "realisations/x!out.doi", "nar/abc.nar.xz", "log/x"] {
        assert_eq!(BlobKey::for_side_file_row(row), None, "{row}");
    }
}

async fn listings_name_every_object(store: &dyn BlobStore, _: &Path) {
    use futures::TryStreamExt;
    let started = std::time::SystemTime::now() - std::time::Duration::from_secs(5);
    let hash = "7qxb8wbwqha95lbfrcj97j6fb8wbywa4";
    let names = [
        key(1).to_string(),
        key(2).to_string(),
        format!("{hash}.ls"),
        format!("log/{hash}-hello-2.12.drv"),
        // A build trace is stored under a key of its own shape, which a row names again.
        BlobKey::for_build_trace(
            &nixcache_protocol::BuildTraceKey::parse(&format!(
                "build-trace-v2/{hash}-hello-2.12.drv/dev.doi"
            ))
            .unwrap(),
        )
        .to_string(),
    ];
    assert!(store.list().try_collect::<Vec<_>>().await.unwrap().is_empty());
    for (n, name) in names.iter().enumerate() {
        let key = match nixcache_protocol::NarFile::parse(name) {
            Ok(file) => BlobKey::for_nar(&file),
            Err(_) => match BlobKey::for_side_file_row(name) {
                Some(key) => key,
                None => panic!("{name} is no key"),
            },
        };
        store.put_stream(&key, chunks(&vec![7; n + 1])).await.unwrap();
    }
    store.delete(&key(2)).await.unwrap();
    let mut listed = store.list().try_collect::<Vec<_>>().await.unwrap();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    let mut want: Vec<(String, u64)> = names
        .iter()
        .enumerate()
        .filter(|(n, _)| *n != 1)
        .map(|(n, name)| (name.clone(), n as u64 + 1))
        .collect();
    want.sort();
    let got: Vec<(String, u64)> = listed.iter().map(|o| (o.name.clone(), o.size)).collect();
    assert_eq!(got, want);
    for object in &listed {
        let modified = object.modified.expect("a modification time");
        assert!(modified > started, "{object:?}");
    }
}

/// Bytes that differ from part to part, so a misplaced part shows in the hash.
pub(super) fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// 40 MiB, by stream and from a staged file in `staging` (multipart on S3, several parts), and
/// ranged reads around the 8 MiB part boundaries.
async fn large_objects(store: &dyn BlobStore, staging: &Path) {
    const MIB: u64 = 1 << 20;
    let data = pseudo_random(40 * MIB as usize);
    let (streamed, staged) = (key(10), key(11));
    let body = Box::pin(stream::iter(
        data.chunks(300_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    ));
    assert_eq!(store.put_stream(&streamed, body).await.unwrap(), 40 * MIB);
    let file = staging.join("large.tmp");
    std::fs::write(&file, &data).unwrap();
    store.put_file(&staged, &file).await.unwrap();
    assert!(!file.exists(), "put_file consumes the staged file");
    for k in [&streamed, &staged] {
        assert_eq!(store.stat(k).await.unwrap(), Some(40 * MIB));
        let whole = store.get(k, None).await.unwrap();
        assert_eq!(whole.size, 40 * MIB);
        // Compared whole (a memcmp): as strict as a hash, and fast in debug builds.
        assert!(collect(whole.body).await.unwrap() == data, "40 MiB round trip");
        for (start, end) in [
            (8 * MIB - 10, 8 * MIB + 9),
            (MIB, 17 * MIB),
            (40 * MIB - 1, 40 * MIB - 1),
            (3, 40 * MIB - 1),
            (MIB - 1, 3 * MIB + 1),
        ] {
            let part = store.get(k, Some(ByteRange { start, end })).await.unwrap();
            assert_eq!(part.size, 40 * MIB, "size is the whole object's");
            let got = collect(part.body).await.unwrap();
            assert!(got == data[start as usize..=end as usize], "bytes {start}-{end}");
        }
        let past = store
            .get(
                k,
                Some(ByteRange {
                    start: 0,
                    end: 40 * MIB,
                }),
            )
            .await;
        assert!(
            matches!(past, Err(StorageError::BadRange { size, .. }) if size == 40 * MIB),
            "a long range past the end must be refused"
        );
        assert!(store.delete(k).await.unwrap());
    }
}
