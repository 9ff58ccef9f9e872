//! A stored NAR damaged on disk (same size, other bytes) is found by the background scrub,
//! dropped, and fetched again: it is not served for ever. Intact ones are marked verified.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{client, get, random_bytes, upstream_key, wait_until, Entry, Proxy, Upstream};
use nixcache_protocol::Compression;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nar_damaged_on_disk_is_dropped_and_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let e = Entry::new("damaged", random_bytes(21, 300_000), Compression::Zstd, &key);
    let plain = Entry::new(
        "damaged-plain",
        random_bytes(22, 200_000),
        Compression::None,
        &key,
    );
    upstream.add(&e);
    upstream.add(&plain);
    let flags = ["--scrub-rate", "1G", "--scrub-interval", "200ms"];
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &flags).await;
    let c = client();
    for entry in [&e, &plain] {
        get(&c, &proxy.url(&entry.narinfo_path())).await.narinfo();
        let url = proxy.url(&format!("/nar/{}", entry.file_name()));
        assert_eq!(get(&c, &url).await.status, StatusCode::OK);
        let stored = proxy.wait_stored(&entry.file_name()).await;
        // One byte flipped in place: the size still matches.
        let mut bytes = std::fs::read(&stored).unwrap();
        bytes[1000] ^= 0xff;
        std::fs::write(&stored, &bytes).unwrap();
    }

    for entry in [&e, &plain] {
        let url = proxy.url(&format!("/nar/{}", entry.file_name()));
        let healed = wait_until(Duration::from_secs(20), || async {
            let got = get(&c, &url).await;
            got.status == StatusCode::OK && got.body == entry.file
        })
        .await;
        assert!(healed, "{} still served damaged", entry.file_name());
        assert_eq!(upstream.gets(&entry.upstream_nar_path()), 2, "fetched again once");
    }
    // The fetched-again NARs, intact, are marked verified by a later pass.
    let db = nixcache::db::connect(&format!("sqlite://{}/db.sqlite", dir.path().display()))
        .await
        .unwrap();
    let verified = wait_until(Duration::from_secs(20), || async {
        let nars = db
            .nars_by_check(nixcache::db::Timestamp::now(), None, 10)
            .await
            .unwrap();
        nars.len() == 2
            && nars
                .iter()
                .all(|n| n.verified_at.unix_ms() > 0 && n.checked_at == n.verified_at)
    })
    .await;
    assert!(verified, "the intact NARs were never marked verified");
    let metrics = get(&c, &proxy.url("/metrics")).await;
    assert!(
        metrics.text().contains("nixcache_scrub_dropped_nars_total 2"),
        "{}",
        metrics.text()
    );
}
