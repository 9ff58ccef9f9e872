//! The replicas' internal endpoint (`/_nixcache/fills/…`) streams unverified bytes of any fetch
//! in progress: only replicas of the same cache (holding its signing key) may use it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{client, get, sample_nar, upstream_key, Entry, Fault, Proxy, Upstream, TIMEOUT};
use nixcache_protocol::Compression;
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
