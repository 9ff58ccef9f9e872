//! How the proxy presents narinfos: its own NAR URL, the upstream's signatures plus its own, a
//! fresh signature after a key change, upstreams rooted below `/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, get, sample_nar, upstream_key, Entry, Proxy, Upstream};
use nixcache_protocol::{Compression, PublicKey, SigningKey};
use reqwest::StatusCode;

async fn proxy_key(client: &reqwest::Client, proxy: &Proxy) -> PublicKey {
    let got = get(client, &proxy.url("/pubkey")).await;
    assert_eq!(got.status, StatusCode::OK);
    PublicKey::parse(got.text().trim()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_narinfo_keeps_upstream_sig_adds_ours_and_points_at_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    // An upstream with its own NAR layout: the proxy must serve its own nar/<FileHash> URL.
    let e = Entry::new("resigned", sample_nar(3, 20_000), Compression::Xz, &key).with_url("blobs/x.nar.xz");
    upstream.add(&e);
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let client = client();
    let ours = proxy_key(&client, &proxy).await;
    assert_eq!(ours.name(), "test-proxy");

    let got = get(&client, &proxy.url(&e.narinfo_path())).await;
    assert_eq!(got.header("content-type"), Some("text/x-nix-narinfo"));
    let info = got.narinfo();
    let upstream_sig = &e.info.sigs[0];
    assert!(
        info.sigs.contains(upstream_sig),
        "upstream Sig missing: {}",
        got.text()
    );
    let proxy_sigs: Vec<_> = info
        .sigs
        .iter()
        .filter(|s| s.key_name() == "test-proxy")
        .collect();
    assert_eq!(proxy_sigs.len(), 1, "{}", got.text());
    assert!(ours.verify(&info.fingerprint(), proxy_sigs[0]));
    assert!(key.public_key().verify(&info.fingerprint(), upstream_sig));

    let file_hash = e.info.file_hash.unwrap();
    assert_eq!(info.url, format!("nar/{}.nar.xz", file_hash.to_nixbase32()));
    assert_eq!(
        (info.file_hash, info.file_size),
        (e.info.file_hash, e.info.file_size)
    );
    assert_eq!((info.nar_hash, info.nar_size), (e.info.nar_hash, e.info.nar_size));
    assert_eq!(
        (&info.references, &info.deriver),
        (&e.info.references, &e.info.deriver)
    );

    // And the proxy's URL really serves the upstream's bytes.
    let nar = get(&client, &proxy.url(&format!("/{}", info.url))).await;
    assert_eq!(nar.status, StatusCode::OK);
    assert!(nar.body == e.file, "NAR bytes differ");
    assert_eq!(upstream.gets("/blobs/x.nar.xz"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_proxy_key_re_signs_stored_narinfos() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let e = Entry::new("rotated", sample_nar(4, 20_000), Compression::Zstd, &key);
    upstream.add(&e);
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let before = get(&client(), &proxy.url(&e.narinfo_path())).await.narinfo();
    assert!(before.sigs.iter().any(|s| s.key_name() == "test-proxy"));
    proxy.stop().await;

    let new_key = SigningKey::generate("rotated-proxy-1").unwrap();
    let key_file = dir.path().join("rotated.sec");
    std::fs::write(&key_file, new_key.to_secret_string()).unwrap();
    let extra = ["--secret-key-file", key_file.to_str().unwrap()];
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &extra).await;
    let client = client();
    assert_eq!(proxy_key(&client, &proxy).await, new_key.public_key());
    for _ in 0..2 {
        let after = get(&client, &proxy.url(&e.narinfo_path())).await.narinfo();
        let mut names: Vec<&str> = after.sigs.iter().map(|s| s.key_name()).collect();
        names.sort_unstable();
        assert_eq!(names, ["rotated-proxy-1", "test-upstream-1"]);
        let ours = after
            .sigs
            .iter()
            .find(|s| s.key_name() == "rotated-proxy-1")
            .unwrap();
        assert!(new_key.public_key().verify(&after.fingerprint(), ours));
    }
    assert_eq!(
        upstream.gets(&e.narinfo_path()),
        1,
        "served from the database, not the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_rooted_below_the_host_root_works() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let e = Entry::new("sub-path", sample_nar(5, 20_000), Compression::Bzip2, &key);
    upstream.add_under("/team/cache", &e);
    let url = format!("{}/team/cache", upstream.url);
    let proxy = Proxy::start_urls(dir.path(), &[url], &[key.public_key()], &[]).await;
    let client = client();
    let info = get(&client, &proxy.url(&e.narinfo_path())).await.narinfo();
    let nar = get(&client, &proxy.url(&format!("/{}", info.url))).await;
    assert_eq!(nar.status, StatusCode::OK);
    assert!(nar.body == e.file, "NAR bytes differ");
    assert_eq!(upstream.gets(&format!("/team/cache{}", e.narinfo_path())), 1);
    assert_eq!(upstream.gets(&format!("/team/cache{}", e.upstream_nar_path())), 1);
    assert_eq!(upstream.gets("/team/cache/nix-cache-info"), 1);
}
