//! Upstream selection, failure statuses, signature trust and re-signing, seen through HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{client, data::store_path, get, sample_nar, upstream_key, Entry, Mode, Proxy, Upstream};
use nixcache_protocol::{Compression, PublicKey, SigningKey};
use reqwest::StatusCode;

fn entry(name: &str, key: &SigningKey) -> Entry {
    Entry::new(name, sample_nar(7, 20_000), Compression::Xz, key)
}

/// Two upstreams holding the same path under different derivers and keys; `best` has priority 10.
async fn two_upstreams(name: &str) -> (Upstream, Upstream, Entry, Entry, Vec<PublicKey>) {
    let (key_a, key_b) = (upstream_key(), SigningKey::generate("test-upstream-2").unwrap());
    let best = Upstream::start(10).await;
    let other = Upstream::start(50).await;
    let best_entry = entry(name, &key_a).with_deriver(&format!("{name}-best.drv"), &key_a);
    let other_entry = entry(name, &key_b).with_deriver(&format!("{name}-other.drv"), &key_b);
    best.add(&best_entry);
    other.add(&other_entry);
    let keys = vec![key_a.public_key(), key_b.public_key()];
    (best, other, best_entry, other_entry, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_priority_upstream_wins() {
    let dir = tempfile::tempdir().unwrap();
    let (best, other, best_entry, _, keys) = two_upstreams("prio").await;
    // Listed first, the worse upstream would win if priorities were ignored.
    let proxy = Proxy::start(dir.path(), &[&other, &best], &keys, &[]).await;
    let info = get(&client(), &proxy.url(&best_entry.narinfo_path()))
        .await
        .narinfo();
    assert_eq!(info.deriver, Some(store_path("prio-best.drv")));
    let names: Vec<&str> = info.sigs.iter().map(|s| s.key_name()).collect();
    assert!(names.contains(&"test-upstream-1"), "{names:?}");
    assert!(!names.contains(&"test-upstream-2"), "{names:?}");
}

/// `?priority=N` on the URL overrides what the upstream's nix-cache-info says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_in_the_url_wins_over_nix_cache_info() {
    let dir = tempfile::tempdir().unwrap();
    let (best, other, best_entry, _, keys) = two_upstreams("fixed").await;
    let urls = [best.url.clone(), format!("{}?priority=1", other.url)];
    let proxy = Proxy::start_urls(dir.path(), &urls, &keys, &[]).await;
    let info = get(&client(), &proxy.url(&best_entry.narinfo_path()))
        .await
        .narinfo();
    assert_eq!(info.deriver, Some(store_path("fixed-other.drv")));
    // Its nix-cache-info (priority 50) was read, as a health probe, and did not override it.
    assert!(
        other.gets("/nix-cache-info") >= 1,
        "the upstream was never probed"
    );
    proxy.probe_upstreams().await;
    let status: serde_json::Value =
        serde_json::from_str(get(&client(), &proxy.url("/status")).await.text()).unwrap();
    assert_eq!(status["upstreams"][1]["priority"], 1, "{status}");
    let dir = tempfile::tempdir().unwrap();
    let bad = [format!("{}?prio=1", other.url)];
    let argv = [
        "nixcache",
        "serve",
        "--data-dir",
        &dir.path().display().to_string(),
        "--upstream",
        &bad[0],
    ];
    let cli = <nixcache::cli::Cli as clap::Parser>::try_parse_from(argv).unwrap();
    let nixcache::cli::Command::Serve(args) = cli.command else {
        unreachable!()
    };
    let err = nixcache::app::build_state(&args).await.err().unwrap().to_string();
    assert!(err.contains("unknown parameter \"prio\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_best_upstream_falls_over_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (best, other, best_entry, _, keys) = two_upstreams("failover").await;
    let proxy = Proxy::start(dir.path(), &[&best, &other], &keys, &[]).await;
    best.set_mode(Mode::Fail500);
    let got = get(&client(), &proxy.url(&best_entry.narinfo_path())).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.narinfo().deriver, Some(store_path("failover-other.drv")));
    assert_eq!(
        best.gets(&best_entry.narinfo_path()),
        1,
        "the best upstream was asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_and_a_failure_is_502_and_not_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let (empty, broken) = (Upstream::start(10).await, Upstream::start(20).await);
    let key = upstream_key();
    let proxy = Proxy::start(dir.path(), &[&empty, &broken], &[key.public_key()], &[]).await;
    broken.set_mode(Mode::Fail500);
    let path = entry("half-down", &key).narinfo_path();
    let client = client();
    for attempt in 1..=2 {
        let got = get(&client, &proxy.url(&path)).await;
        assert_eq!(
            got.status,
            StatusCode::BAD_GATEWAY,
            "attempt {attempt}: {}",
            got.text()
        );
        // A failure must not be cached as a miss: every attempt asks the upstreams again.
        assert_eq!((empty.gets(&path), broken.gets(&path)), (attempt, attempt));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_everywhere_is_404() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Upstream::start(10).await, Upstream::start(20).await);
    let key = upstream_key();
    let proxy = Proxy::start(dir.path(), &[&a, &b], &[key.public_key()], &[]).await;
    let path = entry("nowhere", &key).narinfo_path();
    let got = get(&client(), &proxy.url(&path)).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND, "{}", got.text());
    assert_eq!((a.gets(&path), b.gets(&path)), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_504() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let e = entry("slow", &key);
    upstream.add(&e);
    let extra = ["--upstream-header-timeout", "300ms"];
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &extra).await;
    upstream.set_mode(Mode::Delay(Duration::from_secs(5)));
    let started = Instant::now();
    let got = get(&client(), &proxy.url(&e.narinfo_path())).await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT, "{}", got.text());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(upstream.gets(&e.narinfo_path()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_signature_is_a_miss_and_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let (trusted, stranger) = (upstream_key(), SigningKey::generate("stranger-1").unwrap());
    let e = entry("untrusted", &stranger);
    upstream.add(&e);
    let proxy = Proxy::start(dir.path(), &[&upstream], &[trusted.public_key()], &[]).await;
    let got = get(&client(), &proxy.url(&e.narinfo_path())).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND, "{}", got.text());
    assert_eq!(upstream.gets(&e.narinfo_path()), 1);
    proxy.stop().await;

    // Same data dir, now trusting the key: nothing was kept, so the upstream is asked again.
    let keys = [trusted.public_key(), stranger.public_key()];
    let proxy = Proxy::start(dir.path(), &[&upstream], &keys, &[]).await;
    let info = get(&client(), &proxy.url(&e.narinfo_path())).await.narinfo();
    assert_eq!(info.store_path, e.store_path);
    assert_eq!(upstream.gets(&e.narinfo_path()), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_narinfo_at_the_best_upstream_falls_through_to_a_trusted_one() {
    let dir = tempfile::tempdir().unwrap();
    let (best, other) = (Upstream::start(10).await, Upstream::start(50).await);
    let (trusted, stranger) = (upstream_key(), SigningKey::generate("stranger-1").unwrap());
    best.add(&entry("mixed", &stranger).with_deriver("mixed-stranger.drv", &stranger));
    let good = entry("mixed", &trusted).with_deriver("mixed-trusted.drv", &trusted);
    other.add(&good);
    let proxy = Proxy::start(dir.path(), &[&best, &other], &[trusted.public_key()], &[]).await;
    let info = get(&client(), &proxy.url(&good.narinfo_path())).await.narinfo();
    assert_eq!(info.deriver, Some(store_path("mixed-trusted.drv")));
    assert!(
        info.sigs.iter().all(|s| s.key_name() != "stranger-1"),
        "{:?}",
        info.sigs
    );
    assert_eq!(best.gets(&good.narinfo_path()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upstream_narinfo_is_502() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let e = entry("malformed", &key);
    let text = e.narinfo_text().replace("NarHash: sha256:", "NarHash: sha256:!!");
    assert_ne!(text, e.narinfo_text());
    upstream.put(&e.narinfo_path(), text);
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let got = get(&client(), &proxy.url(&e.narinfo_path())).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text());
    assert_eq!(upstream.gets(&e.narinfo_path()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narinfo_for_another_store_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let (asked, other) = (entry("asked-for", &key), entry("something-else", &key));
    // Correctly signed, but for a different path than the one requested.
    upstream.put(&asked.narinfo_path(), other.narinfo_text());
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let client = client();
    for attempt in 1..=2 {
        let got = get(&client, &proxy.url(&asked.narinfo_path())).await;
        assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text());
        assert_eq!(
            upstream.gets(&asked.narinfo_path()),
            attempt,
            "refusal was cached"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nar_url_pointing_away_from_the_upstream_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, elsewhere) = (Upstream::start(10).await, Upstream::start(10).await);
    let key = upstream_key();
    // The URL is not covered by the signature: an upstream must not send the proxy elsewhere.
    let e = entry("redirected", &key).with_url(&format!("{}/nar/x.nar.xz", elsewhere.url));
    upstream.add(&e);
    elsewhere.put("/nar/x.nar.xz", e.file.clone());
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let got = get(&client(), &proxy.url(&e.narinfo_path())).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text());
    let nar = get(&client(), &proxy.url(&format!("/nar/{}", e.file_name()))).await;
    assert_eq!(nar.status, StatusCode::NOT_FOUND);
    assert_eq!(elsewhere.object_gets(), 0);
}
