//! Negative caching of misses and coalescing of concurrent narinfo lookups.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, get, sample_nar, upstream_key, Entry, Got, Proxy, Upstream};
use futures::future::join_all;
use nixcache_protocol::Compression;
use reqwest::StatusCode;

async fn concurrent_gets(client: &reqwest::Client, url: &str, n: usize) -> Vec<Got> {
    join_all((0..n).map(|_| get(client, url))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_are_remembered_for_the_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let missing = Entry::new("missing", sample_nar(1, 100), Compression::Xz, &key);
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let (client, url) = (client(), proxy.url(&missing.narinfo_path()));
    for got in concurrent_gets(&client, &url, 20).await {
        assert_eq!(got.status, StatusCode::NOT_FOUND, "{}", got.text());
    }
    for _ in 0..20 {
        assert_eq!(get(&client, &url).await.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(upstream.gets(&missing.narinfo_path()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_ttl_asks_the_upstream_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let missing = Entry::new("missing", sample_nar(1, 100), Compression::Xz, &key);
    let extra = ["--negative-ttl", "0s"];
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &extra).await;
    let (client, url) = (client(), proxy.url(&missing.narinfo_path()));
    for n in 1..=5 {
        assert_eq!(get(&client, &url).await.status, StatusCode::NOT_FOUND);
        assert_eq!(upstream.gets(&missing.narinfo_path()), n);
    }
    // Once the path appears upstream it is served straight away.
    upstream.add(&missing);
    assert_eq!(get(&client, &url).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_of_one_path_make_one_upstream_request() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let e = Entry::new("popular", sample_nar(2, 5_000), Compression::Xz, &key);
    upstream.add(&e);
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let answers = concurrent_gets(&client(), &proxy.url(&e.narinfo_path()), 20).await;
    let first = answers[0].narinfo();
    assert_eq!(first.store_path, e.store_path);
    for got in &answers {
        assert_eq!(got.status, StatusCode::OK, "{}", got.text());
        assert_eq!(got.body, answers[0].body);
    }
    assert_eq!(upstream.gets(&e.narinfo_path()), 1);
}
