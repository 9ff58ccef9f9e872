//! NAR fills: fetched once from the upstream, verified, stored, then served locally, also after a
//! restart with the upstream gone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, get, sample_nar, upstream_key, wait_until, Entry, Proxy, Upstream, TIMEOUT};
use nixcache_protocol::Compression;
use reqwest::StatusCode;

/// GETs the narinfo then the NAR it names; checks the bytes and headers; returns the NAR URL.
async fn fetch_and_check(client: &reqwest::Client, proxy: &Proxy, e: &Entry) -> String {
    let info = get(client, &proxy.url(&e.narinfo_path())).await.narinfo();
    let url = proxy.url(&format!("/{}", info.url));
    let got = get(client, &url).await;
    assert_eq!(
        got.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&got.body)
    );
    assert_eq!(got.header("content-type"), Some("application/x-nix-nar"));
    assert_eq!(
        got.header("content-length"),
        Some(e.file.len().to_string().as_str())
    );
    assert_eq!(got.body.len(), e.file.len());
    assert!(got.body == e.file, "NAR bytes differ from the upstream's");
    url
}

async fn fill_then_serve_locally(compression: Compression) {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let name = format!("fill-{}", compression.as_str());
    let e = Entry::new(&name, sample_nar(11, 300_000), compression, &key);
    upstream.add(&e);
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let client = client();

    let url = fetch_and_check(&client, &proxy, &e).await;
    assert_eq!(upstream.gets(&e.upstream_nar_path()), 1);
    let stored = proxy.wait_stored(&e.file_name()).await;
    assert!(std::fs::read(&stored).unwrap() == e.file, "stored file differs");
    assert_eq!(proxy.stored_files().len(), 1, "{:?}", proxy.stored_files());
    assert!(
        wait_until(TIMEOUT, || async { proxy.tmp_files().is_empty() }).await,
        "{:?}",
        proxy.tmp_files()
    );

    let again = get(&client, &url).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.body == e.file, "second read differs");
    assert_eq!(
        upstream.gets(&e.upstream_nar_path()),
        1,
        "second GET reached the upstream"
    );
    assert_eq!(upstream.gets(&e.narinfo_path()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xz_nar_is_filled_and_served_locally() {
    fill_then_serve_locally(Compression::Xz).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_nar_is_filled_and_served_locally() {
    fill_then_serve_locally(Compression::Zstd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bzip2_nar_is_filled_and_served_locally() {
    fill_then_serve_locally(Compression::Bzip2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncompressed_nar_is_filled_and_served_locally() {
    fill_then_serve_locally(Compression::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_serves_narinfo_and_nar_without_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let mut upstream = Upstream::start(10).await;
    let key = upstream_key();
    let e = Entry::new("survivor", sample_nar(12, 200_000), Compression::Xz, &key);
    upstream.add(&e);
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let first_client = client();
    let nar_url_path = {
        let url = fetch_and_check(&first_client, &proxy, &e).await;
        url.trim_start_matches(&proxy.url("")).to_owned()
    };
    let narinfo_before = get(&first_client, &proxy.url(&e.narinfo_path())).await;
    proxy.stop().await;
    upstream.stop().await;
    let probe = client()
        .get(format!("{}/nix-cache-info", upstream.url))
        .send()
        .await;
    assert!(probe.is_err(), "the upstream still answers");

    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let fresh = client();
    let narinfo_after = get(&fresh, &proxy.url(&e.narinfo_path())).await;
    assert_eq!(narinfo_after.status, StatusCode::OK, "{}", narinfo_after.text());
    assert_eq!(narinfo_after.text(), narinfo_before.text());
    let nar = get(&fresh, &proxy.url(&nar_url_path)).await;
    assert_eq!(nar.status, StatusCode::OK);
    assert!(nar.body == e.file, "NAR bytes differ after restart");
}

/// A proxy that has fetched and stored one NAR.
async fn filled(name: &str) -> (tempfile::TempDir, Upstream, Proxy, Entry, String) {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let e = Entry::new(name, sample_nar(13, 200_000), Compression::Zstd, &key);
    upstream.add(&e);
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let url = fetch_and_check(&client(), &proxy, &e).await;
    assert_eq!(upstream.gets(&e.upstream_nar_path()), 1);
    (dir, upstream, proxy, e, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_nar_that_vanished_or_shrank_is_fetched_again() {
    let (_dir, upstream, proxy, e, url) = filled("damaged").await;
    let client = client();
    let stored = proxy.wait_stored(&e.file_name()).await;
    proxy.wait_fills_ended().await;
    std::fs::remove_file(stored).unwrap();
    let got = get(&client, &url).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.body == e.file, "wrong bytes after the stored file vanished");
    assert_eq!(upstream.gets(&e.upstream_nar_path()), 2);

    let stored = proxy.wait_stored(&e.file_name()).await;
    // Seen once under CI load: the third request joined the second's fill, which had stored
    // the file a moment before, and read it cut short.
    proxy.wait_fills_ended().await;
    std::fs::write(&stored, &e.file[..e.file.len() / 2]).unwrap();
    let got = get(&client, &url).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.body == e.file, "wrong bytes after the stored file shrank");
    assert_eq!(upstream.gets(&e.upstream_nar_path()), 3);
    let full = e.file.len() as u64;
    let stored_len = || {
        proxy
            .stored_file(&e.file_name())
            .and_then(|p| std::fs::metadata(p).ok())
    };
    let repaired = wait_until(TIMEOUT, || async {
        stored_len().is_some_and(|m| m.len() == full)
    })
    .await;
    assert!(repaired, "the shrunk file was not replaced: {:?}", stored_len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_range_of_a_stored_nar_that_shrank_is_fetched_again() {
    let (_dir, upstream, proxy, e, url) = filled("shrunk").await;
    let stored = proxy.wait_stored(&e.file_name()).await;
    proxy.wait_fills_ended().await;
    std::fs::write(&stored, &e.file[..e.file.len() / 2]).unwrap();
    let start = 10;
    let got = common::send(
        client()
            .get(&url)
            .header(reqwest::header::RANGE, format!("bytes={start}-")),
    )
    .await;
    assert_eq!(
        got.status,
        StatusCode::PARTIAL_CONTENT,
        "{}",
        String::from_utf8_lossy(&got.body)
    );
    assert!(got.body[..] == e.file[start..], "wrong bytes");
    assert_eq!(upstream.gets(&e.upstream_nar_path()), 2);
}
