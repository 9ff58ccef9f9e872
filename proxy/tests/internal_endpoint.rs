//! The replicas' internal endpoint (`/_nixcache/fills/…`) streams unverified bytes of any fetch
//! in progress: only replicas of the same cache (holding its signing key) may use it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{
    client, get, random_bytes, read_rest, sample_nar, upstream_key, Entry, Fault, Proxy, Upstream, TIMEOUT,
};
use nixcache_protocol::{Compression, SigningKey};
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_replicas_may_stream_a_fill_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let e = Entry::new("internal", sample_nar(5, 400_000), Compression::Zstd, &key);
    upstream.add(&e);
    // Slow enough that the fill is still running while the endpoint is asked.
    let every = Duration::from_millis(100);
    upstream.set_fault(
        &e.upstream_nar_path(),
        Some(Fault::Throttle { chunk: 20_000, every }),
    );
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let client = client();
    let info = get(&client, &proxy.url(&e.narinfo_path())).await.narinfo();
    let download = client
        .get(proxy.url(&format!("/{}", info.url)))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);

    let internal = proxy.url(&format!("/_nixcache/fills/{}", e.file_name()));
    for authorization in [None, Some("Bearer guess"), Some("Basic dXNlcjpwYXNz")] {
        let mut request = client.get(&internal);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = tokio::time::timeout(TIMEOUT, request.send())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{authorization:?}");
        let body = response.bytes().await.unwrap();
        assert!(body.len() < 200, "{authorization:?}: sent NAR bytes");
    }
    drop(download);
}

/// A replica whose token another refuses (their signing keys differ, or their versions derive
/// the token differently) fetches the NAR from the upstream at once: waiting cannot help.
async fn refused_replica_fetches_at_once(file_size_known: bool) {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let mut e = Entry::new("refused", random_bytes(48, 4 << 20), Compression::None, &key);
    if !file_size_known {
        e.info.file_size = None; // not covered by the signature
    }
    upstream.add(&e);
    // Each download takes about 6 s.
    let slow = Fault::Throttle {
        chunk: 64 << 10,
        every: Duration::from_millis(100),
    };
    upstream.set_fault(&e.upstream_nar_path(), Some(slow));
    let keys = [key.public_key()];
    let a = Proxy::start(dir.path(), &[&upstream], &keys, &[]).await;
    // Same data dir and database, another signing key: A refuses B's token.
    let key_file = dir.path().join("other.sec");
    let other = SigningKey::generate("other-proxy-1").unwrap();
    std::fs::write(&key_file, other.to_secret_string()).unwrap();
    let b = Proxy::start(
        dir.path(),
        &[&upstream],
        &keys,
        &["--secret-key-file", key_file.to_str().unwrap()],
    )
    .await;

    let client = client();
    let info = get(&client, &a.url(&e.narinfo_path())).await.narinfo();
    let nar = format!("/{}", info.url);
    let mut from_a = client.get(a.url(&nar)).send().await.unwrap();
    assert_eq!(from_a.status(), StatusCode::OK);
    let a_first = tokio::time::timeout(TIMEOUT, from_a.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let asked = Instant::now();
    let mut from_b = client.get(b.url(&nar)).send().await.unwrap();
    assert_eq!(from_b.status(), StatusCode::OK);
    let b_first = tokio::time::timeout(TIMEOUT, from_b.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        upstream.gets(&e.upstream_nar_path()),
        2,
        "B did not fetch the NAR itself (its first bytes came after {:?})",
        asked.elapsed()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "B waited {:?}",
        asked.elapsed()
    );
    let (a_body, b_body) = (
        read_rest(from_a, a_first.to_vec()).await,
        read_rest(from_b, b_first.to_vec()).await,
    );
    assert!(a_body == e.file && b_body == e.file, "a replica sent wrong bytes");
    a.wait_stored(&e.file_name()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_replica_fetches_at_once() {
    refused_replica_fetches_at_once(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_replica_fetches_at_once_without_file_size() {
    refused_replica_fetches_at_once(false).await;
}
