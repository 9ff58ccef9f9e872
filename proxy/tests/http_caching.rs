//! Caching headers for caches in front (a CDN, nginx) and clients: NAR files are immutable and
//! revalidated with `If-None-Match` (`304` only for a NAR the cache can serve); narinfos are
//! kept briefly; a narinfo 404 as long as the proxy remembers the miss (`--negative-ttl`).
//! `X-Cache-Status` says hit or miss (joining a download: `join.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, get, sample_nar, send, upstream_key, Entry, Proxy, Upstream};
use nixcache_protocol::Compression;
use reqwest::StatusCode;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nars_are_immutable_and_revalidated_narinfos_and_misses_kept_briefly() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let e = Entry::new("cached", sample_nar(5, 50_000), Compression::Xz, &key);
    upstream.add(&e);
    let proxy = Proxy::start(
        dir.path(),
        &[&upstream],
        &[key.public_key()],
        &["--negative-ttl", "90s"],
    )
    .await;
    let client = client();

    let narinfo = get(&client, &proxy.url(&e.narinfo_path())).await;
    assert_eq!(narinfo.status, StatusCode::OK);
    assert_eq!(narinfo.header("cache-control"), Some("public, max-age=300"));
    assert_eq!(narinfo.header("x-cache-status"), Some("MISS"));
    let again = get(&client, &proxy.url(&e.narinfo_path())).await;
    assert_eq!(again.header("x-cache-status"), Some("HIT"));
    let nar_url = proxy.url(&format!("/{}", narinfo.narinfo().url));
    let file_name = nar_url.rsplit('/').next().unwrap().to_owned();
    let etag = format!("\"{file_name}\"");

    // A miss (fetched now) and a hit carry the same validators.
    for status in ["MISS", "HIT"] {
        let got = get(&client, &nar_url).await;
        assert_eq!(got.status, StatusCode::OK);
        assert!(got.body == e.file);
        assert_eq!(got.header("cache-control"), Some(IMMUTABLE));
        assert_eq!(got.header("etag"), Some(etag.as_str()));
        assert_eq!(got.header("x-cache-status"), Some(status));
        // Clients have their last byte a moment before the NAR is stored.
        proxy.wait_stored(&file_name).await;
    }
    let head = send(client.head(&nar_url)).await;
    assert_eq!(head.header("etag"), Some(etag.as_str()));
    let range = send(client.get(&nar_url).header("range", "bytes=0-9")).await;
    assert_eq!(range.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(range.header("etag"), Some(etag.as_str()));

    // Revalidation: 304 without a body for our tag (also weak, in a list, or `*`).
    for tag in [etag.clone(), format!("\"other\", W/{etag}"), "*".into()] {
        let got = send(client.get(&nar_url).header("if-none-match", &tag)).await;
        assert_eq!(got.status, StatusCode::NOT_MODIFIED, "If-None-Match: {tag}");
        assert_eq!(got.header("etag"), Some(etag.as_str()));
        assert_eq!(got.header("cache-control"), Some(IMMUTABLE));
    }
    let other = send(client.get(&nar_url).header("if-none-match", "\"other\"")).await;
    assert_eq!(other.status, StatusCode::OK);
    assert!(other.body == e.file);

    // A NAR the cache cannot serve stays a 404, whatever the client holds, and nothing may keep
    // that answer.
    let unknown_name = format!("{}.nar.xz", "1".repeat(52));
    let unknown = send(
        client
            .get(proxy.url(&format!("/nar/{unknown_name}")))
            .header("if-none-match", format!("\"{unknown_name}\"")),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.header("cache-control"), Some("no-store"));
    assert_eq!(unknown.header("etag"), None);

    // A narinfo miss may be kept for as long as the proxy still remembers it.
    let missing_url = proxy.url(&format!("/{}.narinfo", "2".repeat(32)));
    let missing = get(&client, &missing_url).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let first = max_age(&missing);
    assert!((88..=90).contains(&first), "max-age={first}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let remembered = get(&client, &missing_url).await;
    assert_eq!(remembered.status, StatusCode::NOT_FOUND);
    assert!(max_age(&remembered) < first, "kept longer than it is remembered");
}

/// The `max-age` of a `Cache-Control: public, max-age=N` answer.
fn max_age(got: &common::Got) -> u64 {
    let value = got.header("cache-control").unwrap();
    value.strip_prefix("public, max-age=").unwrap().parse().unwrap()
}

/// A narinfo without FileHash names its file by NarHash, which fixes the NAR but not the
/// compressed bytes: a weak tag. And revalidating a NAR not stored yet downloads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_named_by_its_nar_hash_has_a_weak_tag_and_revalidation_fetches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let mut e = Entry::new("no-file-hash", sample_nar(6, 40_000), Compression::Xz, &key);
    // Neither is in the signed fingerprint.
    (e.info.file_hash, e.info.file_size) = (None, None);
    upstream.add(&e);
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let client = client();
    let info = get(&client, &proxy.url(&e.narinfo_path())).await.narinfo();
    let nar_url = proxy.url(&format!("/{}", info.url));
    let file_name = nar_url.rsplit('/').next().unwrap().to_owned();
    assert!(
        file_name.starts_with(&e.info.nar_hash.to_nixbase32()),
        "{file_name}"
    );
    let weak = format!("W/\"{file_name}\"");

    let revalidated = send(client.get(&nar_url).header("if-none-match", &weak)).await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.header("etag"), Some(weak.as_str()));
    assert_eq!(upstream.gets(&e.upstream_nar_path()), 0, "a 304 fetched the NAR");

    let got = get(&client, &nar_url).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.body == e.file);
    assert_eq!(got.header("etag"), Some(weak.as_str()));
    proxy.wait_stored(&file_name).await;
    let stored = send(client.head(&nar_url)).await;
    assert_eq!(stored.header("x-cache-status"), Some("HIT"));
    assert_eq!(stored.header("etag"), Some(weak.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_not_remembered_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let proxy = Proxy::start(
        dir.path(),
        &[&upstream],
        &[key.public_key()],
        &["--negative-ttl", "0s"],
    )
    .await;
    let missing = get(&client(), &proxy.url(&format!("/{}.narinfo", "2".repeat(32)))).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.header("cache-control"), Some("no-store"));
}
