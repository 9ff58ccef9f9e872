//! Upstream health: a probe (or three failed requests) marks an upstream down, lookups then skip
//! it instead of waiting for its timeout (a miss is a `503` to retry, never a `404` that clients
//! would remember), a probe that gets an answer brings it back, and `/status` and `/metrics` say
//! so. `/readyz` never depends on the upstreams.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{client, get, sample_nar, upstream_key, Entry, Mode, Proxy, Upstream};
use nixcache_protocol::{Compression, SigningKey};
use reqwest::StatusCode;
use serde_json::Value;

fn entry(name: &str, key: &SigningKey) -> Entry {
    Entry::new(name, sample_nar(11, 10_000), Compression::Zstd, key)
}

async fn status(proxy: &Proxy) -> Value {
    let got = get(&client(), &proxy.url("/status")).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.header("content-type"), Some("application/json"));
    serde_json::from_str(got.text()).unwrap()
}

/// The state `/status` gives the upstream at `url`.
async fn state_of(proxy: &Proxy, url: &str) -> String {
    let status = status(proxy).await;
    let upstreams = status["upstreams"].as_array().unwrap();
    let found = upstreams
        .iter()
        .find(|u| u["url"].as_str().unwrap().starts_with(url));
    found.unwrap()["state"].as_str().unwrap().to_owned()
}

async fn up_gauge(proxy: &Proxy, url: &str) -> Option<String> {
    let text = get(&client(), &proxy.url("/metrics")).await.text().to_owned();
    let series = format!("nixcache_upstream_up{{upstream=\"{url}/\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()).map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_is_skipped_until_a_probe_finds_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let key = upstream_key();
    let (alive, dead) = (Upstream::start(10).await, Upstream::start(20).await);
    let (here, there) = (entry("health-here", &key), entry("health-there", &key));
    alive.add(&here);
    dead.add(&there);
    let extra = [
        "--upstream-header-timeout",
        "2s",
        "--upstream-probe-interval",
        "3s",
    ];
    let proxy = Proxy::start(dir.path(), &[&alive, &dead], &[key.public_key()], &extra).await;
    assert_eq!(state_of(&proxy, &dead.url).await, "up");
    assert_eq!(up_gauge(&proxy, &dead.url).await.as_deref(), Some("1"));

    // It stops answering in time: the next probe marks it down.
    dead.set_mode(Mode::Delay(Duration::from_secs(10)));
    proxy.probe_upstreams().await;
    assert_eq!(state_of(&proxy, &dead.url).await, "down");
    assert_eq!(up_gauge(&proxy, &dead.url).await.as_deref(), Some("0"));
    let report = status(&proxy).await;
    let down = &report["upstreams"][1];
    assert_eq!(down["last_error"], "timeout", "no address in it: {down}");

    // A miss no longer waits for it (2 s), nor asks it; it is to be retried at the next probe,
    // not remembered. The alive upstream still serves.
    let started = Instant::now();
    let got = get(&client(), &proxy.url(&there.narinfo_path())).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE, "{}", got.text());
    assert_eq!(got.header("retry-after"), Some("3"));
    assert_eq!(got.header("cache-control"), Some("no-store"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(dead.gets(&there.narinfo_path()), 0, "a down upstream was asked");
    assert_eq!(
        get(&client(), &proxy.url(&here.narinfo_path())).await.status,
        StatusCode::OK
    );
    let ready = get(&client(), &proxy.url("/readyz")).await;
    assert_eq!(
        ready.status,
        StatusCode::OK,
        "upstreams never make a replica unready"
    );

    // It answers again: the next probe brings it back, and the miss was not remembered.
    dead.set_mode(Mode::Normal);
    proxy.probe_upstreams().await;
    assert_eq!(state_of(&proxy, &dead.url).await, "up");
    let got = get(&client(), &proxy.url(&there.narinfo_path())).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(dead.gets(&there.narinfo_path()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_failed_requests_in_a_row_mark_an_upstream_down_before_its_probe() {
    let dir = tempfile::tempdir().unwrap();
    let key = upstream_key();
    let broken = Upstream::start(10).await;
    let proxy = Proxy::start(dir.path(), &[&broken], &[key.public_key()], &[]).await;
    broken.set_mode(Mode::Fail500);
    for n in 0..3 {
        let path = entry(&format!("failing-{n}"), &key).narinfo_path();
        let got = get(&client(), &proxy.url(&path)).await;
        assert_eq!(got.status, StatusCode::BAD_GATEWAY, "request {n}: {}", got.text());
    }
    assert_eq!(state_of(&proxy, &broken.url).await, "down");
    let path = entry("skipped", &key).narinfo_path();
    let got = get(&client(), &proxy.url(&path)).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE, "{}", got.text());
    assert_eq!(
        got.header("retry-after"),
        Some("10"),
        "the default probe interval"
    );
    assert_eq!(broken.gets(&path), 0);
    let report = status(&proxy).await;
    assert_eq!(report["upstreams"][0]["errors"], 3, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_each_upstreams_answers_and_the_hit_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let key = upstream_key();
    let upstream = Upstream::start(30).await;
    let found = entry("status-found", &key);
    upstream.add(&found);
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let before = status(&proxy).await;
    assert_eq!(before["cache"]["hit_ratio"], Value::Null, "{before}");
    assert_eq!(before["ready"], true);
    assert!(before["public_key"].as_str().unwrap().contains(':'), "{before}");
    let client = client();
    for _ in 0..3 {
        assert_eq!(
            get(&client, &proxy.url(&found.narinfo_path())).await.status,
            StatusCode::OK
        );
    }
    let missing = entry("status-missing", &key).narinfo_path();
    assert_eq!(
        get(&client, &proxy.url(&missing)).await.status,
        StatusCode::NOT_FOUND
    );

    let report = status(&proxy).await;
    let one = &report["upstreams"][0];
    assert_eq!(
        (one["hits"].as_u64(), one["misses"].as_u64()),
        (Some(1), Some(1)),
        "{one}"
    );
    assert_eq!(one["priority"], 30);
    assert!(one["probe_latency_ms"].as_f64().is_some(), "{one}");
    let narinfo = &report["cache"]["narinfo"];
    assert_eq!(
        (narinfo["hits"].as_u64(), narinfo["misses"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(narinfo["not_found"], 1);
    let ratio = report["cache"]["hit_ratio"].as_f64().unwrap();
    assert!((ratio - 2.0 / 3.0).abs() < 1e-9, "{report}");
}
