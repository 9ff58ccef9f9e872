//! S3-only cases, on a real s3s-fs; the shared conformance suite runs in `storage/tests.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::{stream, StreamExt};

use super::{parse_content_range, S3Config, S3Store, S3Timeouts};
use nixcache_testsupport::s3::{S3sFs, ACCESS_KEY};

use crate::storage::{
    tests::{chunks, key, pseudo_random, s3_config, s3_store},
    BlobStore, ByteStream, StorageError,
};

/// `data` in 1 MiB chunks, then an error: the upload fails after some parts went up.
fn failing_after(data: &[u8]) -> ByteStream {
    let mut parts: Vec<std::io::Result<Bytes>> = data
        .chunks(1 << 20)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    parts.push(Err(std::io::Error::other("upstream cut off")));
    Box::pin(stream::iter(parts))
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_failing_multipart_upload_is_aborted() {
    let Some(server) = S3sFs::start().await.unwrap() else {
        return;
    };
    let store = s3_store(&server, "").await;
    let k = key(1);
    let err = store
        .put_stream(&k, failing_after(&pseudo_random(20 << 20)))
        .await;
    assert!(matches!(err, Err(StorageError::Io { .. })), "{err:?}");
    assert_eq!(store.stat(&k).await.unwrap(), None);
    assert_eq!(server.open_uploads().unwrap(), 0, "the upload was aborted");
}

#[tokio::test]
async fn a_cancelled_multipart_upload_is_aborted() {
    let Some(server) = S3sFs::start().await.unwrap() else {
        return;
    };
    let store = Arc::new(s3_store(&server, "").await);
    // Nine MiB, then silence: one part goes up, the second never fills.
    let body: ByteStream = Box::pin(chunks(&pseudo_random(9 << 20)).chain(stream::pending()));
    let task = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.put_stream(&key(2), body).await }
    });
    // Until a part goes up, the uploader may not know the upload's id yet (the server created
    // it, the answer is on its way): cancelled then, the upload is the lifecycle rule's to remove.
    wait_for("the first part", || server.upload_parts().unwrap() >= 1).await;
    assert_eq!(server.open_uploads().unwrap(), 1);
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    wait_for("the abort", || server.open_uploads().unwrap() == 0).await;
    assert_eq!(store.stat(&key(2)).await.unwrap(), None);
}

#[tokio::test]
async fn prefixes_keep_stores_apart() {
    let Some(server) = S3sFs::start().await.unwrap() else {
        return;
    };
    let bucket = server.create_bucket().unwrap();
    let a = S3Store::connect(&s3_config(&server, &bucket, "/team-a"))
        .await
        .unwrap();
    let b = S3Store::connect(&s3_config(&server, &bucket, "team-b/"))
        .await
        .unwrap();
    let k = key(3);
    a.put_stream(&k, chunks(b"only in a")).await.unwrap();
    assert_eq!(b.stat(&k).await.unwrap(), None);
    assert!(matches!(b.get(&k, None).await, Err(StorageError::NotFound(_))));
    assert!(!b.delete(&k).await.unwrap());
    assert_eq!(a.stat(&k).await.unwrap(), Some(9));
    // The layout operators see in the bucket: `<prefix>/nar/<file>`.
    let file = server
        .data_dir()
        .join(&bucket)
        .join("team-a/nar")
        .join(k.as_str());
    assert_eq!(std::fs::read(file).unwrap(), b"only in a");
}

/// A listing reads every page (S3 answers at most 1000 objects each) and only its prefix.
#[tokio::test]
async fn listings_go_through_every_page_of_their_prefix() {
    use futures::TryStreamExt;
    let Some(server) = S3sFs::start().await.unwrap() else {
        return;
    };
    let bucket = server.create_bucket().unwrap();
    let a = S3Store::connect(&s3_config(&server, &bucket, "team-a"))
        .await
        .unwrap();
    let b = S3Store::connect(&s3_config(&server, &bucket, "team-b"))
        .await
        .unwrap();
    b.put_stream(&key(1), chunks(b"b's")).await.unwrap();
    // Written behind the server's back, as fast as a file: s3s-fs serves its directory.
    let dir = server.data_dir().join(&bucket).join("team-a/nar");
    std::fs::create_dir_all(&dir).unwrap();
    for n in 0..1005u32 {
        std::fs::write(dir.join(format!("object-{n:04}")), n.to_string()).unwrap();
    }
    let listed: Vec<_> = a.list().try_collect().await.unwrap();
    assert_eq!(listed.len(), 1005);
    let mut names: Vec<_> = listed.iter().map(|o| o.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        (names.len(), names[0], names[1004]),
        (1005, "object-0000", "object-1004")
    );
    let listed_b: Vec<_> = b.list().try_collect().await.unwrap();
    assert_eq!(
        listed_b
            .iter()
            .map(|o| (o.name.as_str(), o.size))
            .collect::<Vec<_>>(),
        [(key(1).as_str(), 3)]
    );
}

#[tokio::test]
async fn ping_explains_bad_credentials_and_missing_buckets() {
    let Some(server) = S3sFs::start().await.unwrap() else {
        return;
    };
    let bucket = server.create_bucket().unwrap();
    S3Store::connect(&s3_config(&server, &bucket, ""))
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();

    let mut wrong = s3_config(&server, &bucket, "");
    wrong.credentials = Some(aws_sdk_s3::config::Credentials::new(
        ACCESS_KEY,
        "not-the-secret",
        None,
        None,
        "test",
    ));
    let err = S3Store::connect(&wrong).await.unwrap().ping().await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&bucket) && msg.contains(&server.endpoint()), "{msg}");
    assert!(msg.contains("access denied"), "{msg}");
    assert!(!msg.contains("not-the-secret"), "{msg}");

    let missing = s3_config(&server, "no-such-bucket", "");
    let err = S3Store::connect(&missing)
        .await
        .unwrap()
        .ping()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_ping_not_connect() {
    let mut config = S3Config {
        bucket: "b".into(),
        endpoint: Some("http://127.0.0.1:9".into()),
        region: Some("us-east-1".into()),
        path_style: true,
        ..S3Config::default()
    };
    config.credentials = Some(aws_sdk_s3::config::Credentials::new("a", "s", None, None, "test"));
    let store = S3Store::connect(&config).await.unwrap();
    let err = store.ping().await.unwrap_err();
    assert!(err.to_string().contains("could not be reached"), "{err}");
}

#[test]
fn debug_hides_credentials() {
    let config = S3Config {
        bucket: "b".into(),
        credentials: Some(aws_sdk_s3::config::Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI",
            None,
            None,
            "t",
        )),
        ..S3Config::default()
    };
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("wJalrXUtnFEMI") && !shown.contains("AKIDEXAMPLE"),
        "{shown}"
    );
    assert!(shown.contains("***"), "{shown}");
}

#[tokio::test]
async fn connect_refuses_an_empty_bucket_name() {
    assert!(S3Store::connect(&S3Config::default()).await.is_err());
}

#[test]
fn content_range_parses() {
    assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9, 100)));
    assert_eq!(parse_content_range("bytes */100"), None);
    assert_eq!(parse_content_range("items 0-9/100"), None);
}

/// Short bounds, so that the hung-server test takes seconds.
fn short_timeouts() -> S3Timeouts {
    S3Timeouts {
        connect: Duration::from_secs(1),
        attempt: Duration::from_secs(1),
        operation: Duration::from_secs(3),
        upload_attempt: Duration::from_secs(1),
        body_idle: Duration::from_secs(1),
    }
}

/// Runs `f`, and fails unless it ends (whatever the outcome) within `limit`.
async fn bounded<T>(what: &str, limit: Duration, f: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let out = tokio::time::timeout(limit * 3, f)
        .await
        .unwrap_or_else(|_| panic!("{what} still hangs after {:?}", limit * 3));
    assert!(started.elapsed() < limit, "{what} took {:?}", started.elapsed());
    out
}

#[tokio::test]
async fn a_hung_server_fails_requests_and_body_reads_in_bounded_time() {
    let Some(server) = S3sFs::start().await.unwrap() else {
        return;
    };
    let bucket = server.create_bucket().unwrap();
    // More than the loopback socket buffers hold, so a read must wait for the server. Uploaded
    // with the default bounds: a busy machine may need more than a second per part.
    let data = pseudo_random(32 << 20);
    let k = key(9);
    let uploader = S3Store::connect(&s3_config(&server, &bucket, "")).await.unwrap();
    uploader.put_stream(&k, chunks(&data)).await.unwrap();
    let config = S3Config {
        timeouts: short_timeouts(),
        ..s3_config(&server, &bucket, "")
    };
    let store = S3Store::connect(&config).await.unwrap();
    let mut read = store.get(&k, None).await.unwrap().body;
    read.next().await.unwrap().unwrap();

    server.pause().unwrap();
    let limit = Duration::from_secs(6);
    let stat = bounded("stat", limit, store.stat(&k)).await;
    assert!(matches!(stat, Err(StorageError::Backend { .. })), "{stat:?}");
    let get = bounded("get", limit, store.get(&k, None)).await;
    assert!(
        matches!(get, Err(StorageError::Backend { .. })),
        "{:?}",
        get.map(|r| r.size)
    );
    let put = bounded("put", limit, store.put_stream(&key(10), chunks(b"small"))).await;
    assert!(matches!(put, Err(StorageError::Backend { .. })), "{put:?}");
    let stalled = bounded("reading a body", limit, async {
        loop {
            match read.next().await {
                Some(Ok(_)) => continue,
                Some(Err(err)) => return err,
                None => panic!("the whole body arrived from a paused server"),
            }
        }
    })
    .await;
    assert_eq!(stalled.kind(), std::io::ErrorKind::TimedOut, "{stalled}");

    server.resume().unwrap();
    assert_eq!(store.stat(&k).await.unwrap(), Some(data.len() as u64));
}

/// A large object read in 1 MiB parts, 4 GETs at once, with `memory` for parts read ahead.
async fn reading_in_parts(server: &S3sFs, memory: u64) -> (S3Store, super::ReadAhead) {
    let read_ahead = super::ReadAhead::new(4, 1 << 20, memory);
    let store = crate::storage::tests::s3_store_reading(server, "", read_ahead.clone()).await;
    (store, read_ahead)
}

#[tokio::test]
async fn large_reads_come_whole_in_parts_with_or_without_room_ahead() {
    let Some(server) = S3sFs::start().await.unwrap() else {
        return;
    };
    let data = pseudo_random((5 << 20) + 12_345);
    for memory in [0, 64 << 20] {
        let (store, _) = reading_in_parts(&server, memory).await;
        let k = key(20);
        store.put_stream(&k, chunks(&data)).await.unwrap();
        let whole = store.get(&k, None).await.unwrap();
        assert_eq!(whole.size, data.len() as u64);
        let got = crate::storage::local::collect(whole.body).await.unwrap();
        assert!(got == data, "whole object, {memory} bytes ahead");
        let range = crate::storage::ByteRange {
            start: 100,
            end: (4 << 20) + 7,
        };
        let part = store.get(&k, Some(range)).await.unwrap();
        let got = crate::storage::local::collect(part.body).await.unwrap();
        assert!(got == data[100..=(4 << 20) + 7], "a range, {memory} bytes ahead");
        // Exactly two parts, and a small object in one GET.
        let two = data[..2 << 20].to_vec();
        store.put_stream(&key(21), chunks(&two)).await.unwrap();
        let got = crate::storage::local::collect(store.get(&key(21), None).await.unwrap().body).await;
        assert!(got.unwrap() == two);
        store.put_stream(&key(22), chunks(&data[..10])).await.unwrap();
        let got = crate::storage::local::collect(store.get(&key(22), None).await.unwrap().body).await;
        assert_eq!(got.unwrap(), &data[..10]);
    }
}

#[tokio::test]
async fn a_read_dropped_midway_gives_its_room_back() {
    let Some(server) = S3sFs::start().await.unwrap() else {
        return;
    };
    let (store, read_ahead) = reading_in_parts(&server, 8 << 20).await;
    let all = read_ahead.memory.available_permits();
    let k = key(23);
    store
        .put_stream(&k, chunks(&pseudo_random(12 << 20)))
        .await
        .unwrap();
    let mut body = store.get(&k, None).await.unwrap().body;
    body.next().await.unwrap().unwrap();
    wait_for("parts to be read ahead", || {
        read_ahead.memory.available_permits() < all
    })
    .await;
    drop(body);
    wait_for("the room of parts read ahead", || {
        read_ahead.memory.available_permits() == all
    })
    .await;
}

#[tokio::test]
async fn presigned_urls_serve_the_object_and_its_ranges() {
    let Some(server) = S3sFs::start().await.unwrap() else {
        return;
    };
    let store = s3_store(&server, "p/").await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let k = key(3);
    // Stored as fills store NARs: from a staged file (a streamed, checksummed upload).
    let staging = tempfile::tempdir().unwrap();
    let staged = staging.path().join("nar");
    std::fs::write(&staged, &data).unwrap();
    store.put_file(&k, &staged).await.unwrap();
    let url = store
        .presigned_get(&k, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert!(url.starts_with(&server.endpoint()), "{url}");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let whole = client.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    let headers = whole.headers();
    assert_eq!(
        headers.get("content-encoding").unwrap(),
        "none",
        "not the upload's aws-chunked"
    );
    assert_eq!(headers.get("content-type").unwrap(), nixcache_protocol::MIME_NAR);
    assert_eq!(whole.bytes().await.unwrap().as_ref(), &data[..]);
    let part = client
        .get(&url)
        .header("range", "bytes=7-99")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().as_ref(), &data[7..100]);
    // Only GET is signed: a HEAD (or anything else) on the URL is refused.
    assert_eq!(client.head(&url).send().await.unwrap().status(), 403);
}
