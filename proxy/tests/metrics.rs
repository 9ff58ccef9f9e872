//! `/metrics` after a scripted sequence of hits, misses, errors and coalesced requests; and the
//! in-process GC schedule, seen through its metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{client, get, random_bytes, wait_until, Entry, Mode, Proxy, Upstream};
use nixcache_protocol::Compression;
use reqwest::StatusCode;

/// The value of the sample `name{labels}` in the exposition `text`, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn expect(text: &str, series: &str, value: f64) {
    assert_eq!(sample(text, series), Some(value), "{series} in\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_follow_hits_misses_and_errors() {
    let key = common::upstream_key();
    let upstream = Upstream::start(10).await;
    let entry = Entry::new("m", random_bytes(1, 200 << 10), Compression::Zstd, &key);
    let slow = Entry::new("slow", random_bytes(2, 1000), Compression::Zstd, &key);
    upstream.add(&entry);
    upstream.add(&slow);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let c = client();
    let nar = proxy.url(&format!("/nar/{}", entry.file_name()));

    assert_eq!(
        get(&c, &proxy.url(&entry.narinfo_path())).await.status,
        StatusCode::OK
    ); // miss
    assert_eq!(
        get(&c, &proxy.url(&entry.narinfo_path())).await.status,
        StatusCode::OK
    ); // hit
    assert_eq!(get(&c, &nar).await.body, entry.file); // miss (a fill)
    proxy.wait_stored(&entry.file_name()).await;
    assert_eq!(get(&c, &nar).await.body, entry.file); // hit
    let absent = common::data::store_path("absent");
    let got = get(&c, &proxy.url(&format!("/{}.narinfo", absent.hash()))).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&c, &proxy.url("/nar/bogus.nar")).await.status,
        StatusCode::BAD_REQUEST
    );
    // Eight clients at once for one narinfo: one lookup, seven joined it.
    upstream.set_mode(Mode::Delay(Duration::from_secs(1)));
    let url = proxy.url(&slow.narinfo_path());
    let all = futures::future::join_all((0..8).map(|_| get(&c, &url))).await;
    assert!(all.iter().all(|g| g.status == StatusCode::OK));
    upstream.set_mode(Mode::Fail500);
    let failing = common::data::store_path("failing");
    let got = get(&c, &proxy.url(&format!("/{}.narinfo", failing.hash()))).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);

    let text = get(&c, &proxy.url("/metrics")).await.text().to_owned();
    let up = format!("{}/", upstream.url);
    expect(
        &text,
        "nixcache_cache_lookups_total{kind=\"narinfo\",result=\"miss\"}",
        9.0,
    );
    expect(
        &text,
        "nixcache_cache_lookups_total{kind=\"narinfo\",result=\"hit\"}",
        1.0,
    );
    expect(
        &text,
        "nixcache_cache_lookups_total{kind=\"narinfo\",result=\"not_found\"}",
        1.0,
    );
    expect(
        &text,
        "nixcache_cache_lookups_total{kind=\"narinfo\",result=\"error\"}",
        1.0,
    );
    expect(
        &text,
        "nixcache_cache_lookups_total{kind=\"nar\",result=\"miss\"}",
        1.0,
    );
    expect(
        &text,
        "nixcache_cache_lookups_total{kind=\"nar\",result=\"hit\"}",
        1.0,
    );
    expect(&text, "nixcache_coalesced_requests_total{kind=\"narinfo\"}", 7.0);
    expect(
        &text,
        "nixcache_served_bytes_total{kind=\"nar\"}",
        2.0 * entry.file.len() as f64,
    );
    expect(
        &text,
        "nixcache_http_requests_total{route=\"/{hash}.narinfo\",method=\"GET\",status=\"200\"}",
        10.0,
    );
    expect(
        &text,
        "nixcache_http_requests_total{route=\"/{hash}.narinfo\",method=\"GET\",status=\"404\"}",
        1.0,
    );
    expect(
        &text,
        "nixcache_http_requests_total{route=\"/{hash}.narinfo\",method=\"GET\",status=\"502\"}",
        1.0,
    );
    expect(
        &text,
        "nixcache_http_requests_total{route=\"/nar/{file}\",method=\"GET\",status=\"200\"}",
        2.0,
    );
    expect(
        &text,
        "nixcache_http_requests_total{route=\"/nar/{file}\",method=\"GET\",status=\"400\"}",
        1.0,
    );
    let narinfo_fetches =
        format!("nixcache_upstream_request_duration_seconds_count{{upstream=\"{up}\",kind=\"narinfo\"}}");
    expect(&text, &narinfo_fetches, 3.0); // two found, one absent
    let nar_fetches =
        format!("nixcache_upstream_request_duration_seconds_count{{upstream=\"{up}\",kind=\"nar\"}}");
    expect(&text, &nar_fetches, 1.0);
    let errors =
        format!("nixcache_upstream_errors_total{{upstream=\"{up}\",kind=\"narinfo\",reason=\"status\"}}");
    expect(&text, &errors, 1.0);
    expect(&text, "nixcache_fills_in_flight", 0.0);
    assert!(
        text.contains("# TYPE nixcache_http_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_gc_runs_in_process() {
    let key = common::upstream_key();
    let upstream = Upstream::start(10).await;
    let entries: Vec<Entry> = (0..3)
        .map(|i| {
            Entry::new(
                &format!("g{i}"),
                random_bytes(10 + i, 64 << 10),
                Compression::Zstd,
                &key,
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--max-size",
        "100K",
        "--gc-schedule",
        "* * * * * *",
        "--gc-keep-recent",
        "0s",
        "--access-flush-interval",
        "0s",
    ];
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &flags).await;
    let c = client();
    for x in &entries {
        upstream.add(x);
        assert_eq!(
            get(&c, &proxy.url(&x.narinfo_path())).await.status,
            StatusCode::OK
        );
        assert_eq!(
            get(&c, &proxy.url(&format!("/nar/{}", x.file_name()))).await.body,
            x.file
        );
        proxy.wait_stored(&x.file_name()).await;
    }
    // Within a few seconds the schedule fires and evicts down to 100 KiB: the first two go.
    let evicted = wait_until(Duration::from_secs(5), || async {
        proxy.stored_file(&entries[0].file_name()).is_none()
    })
    .await;
    assert!(evicted, "no scheduled GC: {:?}", proxy.stored_files());
    let metrics = || async { get(&client(), &proxy.url("/metrics")).await.text().to_owned() };
    let counted = wait_until(Duration::from_secs(5), || async {
        sample(&metrics().await, "nixcache_gc_evictions_total{kind=\"nar\"}") == Some(2.0)
    })
    .await;
    let text = metrics().await;
    assert!(counted, "{text}");
    assert!(
        sample(&text, "nixcache_gc_runs_total{kind=\"gc\",result=\"ok\"}").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    let size = sample(&text, "nixcache_cache_size_bytes").unwrap();
    assert_eq!(size, entries[2].file.len() as f64, "{text}");
    assert_eq!(proxy.stored_files().len(), 1, "{:?}", proxy.stored_files());
    assert!(proxy.stored_file(&entries[2].file_name()).is_some());
    proxy.stop().await;
}
