//! Upstreams as they are in the wild: NAR URLs are opaque (cachix serves UUIDs, snix
//! `nar/…?narsize=`, attic `nar/<hash>.nar` for a zstd file: the narinfo's `Compression` is
//! what counts, never the URL's extension), and narinfos may lack `FileHash`/`FileSize`
//! (niks3). Each is fetched, verified, and served under the cache's own name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, get, sample_nar, upstream_key, Entry, Proxy, Upstream};
use nixcache_protocol::{Compression, NarInfo, SigningKey};
use reqwest::StatusCode;

/// An entry whose narinfo names its NAR `url` (unsigned field), published under that URL.
fn published(upstream: &Upstream, entry: Entry, url: &str) -> Entry {
    let entry = entry.with_url(url);
    upstream.put(&entry.narinfo_path(), entry.narinfo_text());
    // The upstream serves the path part; a query (snix's `?narsize=`) is not part of it.
    let path = url.split('?').next().unwrap();
    upstream.put(&format!("/{path}"), entry.file.clone());
    entry
}

/// Fetches the narinfo and its NAR through the proxy; checks the NAR's bytes are the file's.
async fn served(proxy: &Proxy, entry: &Entry) -> NarInfo {
    let client = client();
    let info = get(&client, &proxy.url(&entry.narinfo_path())).await.narinfo();
    let nar = get(&client, &proxy.url(&format!("/{}", info.url))).await;
    assert_eq!(nar.status, StatusCode::OK, "{}: {}", info.url, nar.text());
    assert_eq!(nar.body, entry.file, "{}", info.url);
    info
}

fn entry(name: &str, compression: Compression, key: &SigningKey) -> Entry {
    Entry::new(name, sample_nar(name.len() as u64, 30_000), compression, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_nar_urls_are_fetched_and_served_under_the_caches_own_names() {
    let dir = tempfile::tempdir().unwrap();
    let key = upstream_key();
    let upstream = Upstream::start(10).await;
    let cachix = published(
        &upstream,
        entry("cachix", Compression::Zstd, &key),
        "nar/5bb4b3a1-2c3d-4e5f-8a9b-0c1d2e3f4a5b",
    );
    let snix = published(
        &upstream,
        entry("snix-store", Compression::Zstd, &key),
        "nar/1b2m2y8ajgnz4d4r2q5l7a0qx0f5m8xq3m2v9k3d0a5f6g7h8j9k?narsize=30000",
    );
    // attic: a zstd file whose URL says `.nar`.
    let attic = published(
        &upstream,
        entry("attic", Compression::Zstd, &key),
        "nar/0a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p.nar",
    );
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    for e in [&cachix, &snix, &attic] {
        let info = served(&proxy, e).await;
        assert_eq!(info.url, format!("nar/{}", e.file_name()), "the cache's own name");
        assert_eq!(info.compression, Compression::Zstd);
        assert!(info.url.ends_with(".nar.zst"), "{}", info.url);
        assert_eq!(
            upstream.gets(&format!("/{}", e.info.url.split('?').next().unwrap())),
            1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narinfos_without_file_hash_or_size_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let key = upstream_key();
    let upstream = Upstream::start(10).await;
    let mut niks3 = entry("niks3", Compression::Xz, &key);
    niks3.info.file_hash = None; // neither is covered by the signature
    niks3.info.file_size = None;
    let niks3 = published(&upstream, niks3, "nar/niks3-object.nar.xz");
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let info = served(&proxy, &niks3).await;
    // Named by its NarHash (the only hash there is), compression from the narinfo.
    assert_eq!(info.nar_hash, niks3.info.nar_hash);
    assert!(info.url.ends_with(".nar.xz"), "{}", info.url);
    assert!(
        info.url.contains(&niks3.info.nar_hash.to_nixbase32()),
        "{}",
        info.url
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nars_on_another_host_only_where_the_upstream_url_allows_them() {
    // garnix: narinfos on the cache, NARs on a CDN. Off by default (the URL is not signed),
    // on with `?nar-host=HOST:PORT` for that upstream.
    let key = upstream_key();
    let (upstream, cdn) = (Upstream::start(10).await, Upstream::start(10).await);
    let cdn_host = cdn.url.trim_start_matches("http://").to_owned();
    let e = entry("garnix", Compression::Zstd, &key).with_url(&format!("{}/nar/cdn-object", cdn.url));
    upstream.put(&e.narinfo_path(), e.narinfo_text());
    cdn.put("/nar/cdn-object", e.file.clone());

    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let got = get(&client(), &proxy.url(&e.narinfo_path())).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text());
    assert_eq!(cdn.object_gets(), 0);

    // Another port on the same host is another host.
    let dir = tempfile::tempdir().unwrap();
    let other_port = format!("{}?nar-host=127.0.0.1:1", upstream.url);
    let proxy = Proxy::start_urls(dir.path(), &[other_port], &[key.public_key()], &[]).await;
    let got = get(&client(), &proxy.url(&e.narinfo_path())).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text());

    let dir = tempfile::tempdir().unwrap();
    let allowed = format!("{}?nar-host={cdn_host}", upstream.url);
    let proxy = Proxy::start_urls(dir.path(), &[allowed], &[key.public_key()], &[]).await;
    let info = served(&proxy, &e).await;
    assert_eq!(info.url, format!("nar/{}", e.file_name()));
    assert_eq!(cdn.gets("/nar/cdn-object"), 1);
}
