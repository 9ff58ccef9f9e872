//! A narinfo's signature covers the store path, NarHash, NarSize and references, not the file
//! fields or the URL. What an upstream may change there without breaking the signature must not
//! let it poison the cache.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, get, sample_nar, upstream_key, Entry, Proxy, Upstream};
use nixcache_protocol::{Compression, SigningKey};
use reqwest::StatusCode;

fn entry(name: &str, seed: u64, key: &SigningKey) -> Entry {
    Entry::new(name, sample_nar(seed, 30_000), Compression::Zstd, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_size_of_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let mut e = entry("empty-file", 3, &key);
    e.info.file_size = Some(0);
    assert!(e.info.verify_any(&[key.public_key()]), "still validly signed");
    upstream.put(&e.narinfo_path(), e.info.to_string());
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let got = get(&client(), &proxy.url(&e.narinfo_path())).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_size_far_beyond_the_nar_is_refused() {
    // It would reserve that much of --max-fill-bytes for a download that can never need it.
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let mut e = entry("inflated-file", 6, &key);
    e.info.file_size = Some(1 << 50);
    assert!(e.info.verify_any(&[key.public_key()]), "still validly signed");
    upstream.add(&e);
    upstream.put(&e.narinfo_path(), e.info.to_string());
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let got = get(&client(), &proxy.url(&e.narinfo_path())).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narinfo_claiming_another_stored_nar_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let stored = entry("stored", 4, &key);
    upstream.add(&stored);
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let client = client();
    let info = get(&client, &proxy.url(&stored.narinfo_path())).await.narinfo();
    let nar = get(&client, &proxy.url(&format!("/{}", info.url))).await;
    assert_eq!(nar.body, stored.file);
    // The check below reads the stored NAR's row, which the fill writes a moment after the last
    // byte went out (seen under load: the liar got in first).
    proxy.wait_stored(&stored.file_name()).await;

    // Another path, correctly signed, whose unsigned FileHash/URL name the stored file.
    let mut liar = entry("liar", 5, &key);
    liar.info.file_hash = stored.info.file_hash;
    liar.info.file_size = stored.info.file_size;
    liar.info.url = stored.info.url.clone();
    assert!(liar.info.verify_any(&[key.public_key()]));
    upstream.put(&liar.narinfo_path(), liar.info.to_string());
    let got = get(&client, &proxy.url(&liar.narinfo_path())).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text());

    // The stored NAR and its own narinfo are untouched.
    let again = get(&client, &proxy.url(&format!("/{}", info.url))).await;
    assert_eq!(again.body, stored.file);
    assert_eq!(
        get(&client, &proxy.url(&stored.narinfo_path())).await.narinfo(),
        info
    );
}
