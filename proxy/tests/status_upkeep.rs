//! What a replica reports beyond its own requests: the NAR bytes it fetched from each upstream,
//! its last hour, the size limit, and the GC and fsck runs recorded in the shared database,
//! whether it ran them (`serve --gc-schedule`) or another process did (`nixcache fsck`, as a
//! CronJob runs it), in `/status` and in `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use clap::Parser;
use common::{client, get, sample_nar, upstream_key, Entry, Proxy, Upstream};
use nixcache::cli::{Cli, Command};
use nixcache_protocol::Compression;
use reqwest::StatusCode;
use serde_json::Value;

async fn status(proxy: &Proxy) -> Value {
    serde_json::from_str(get(&client(), &proxy.url("/status")).await.text()).unwrap()
}

/// `nixcache fsck --data-dir DIR`, as its CronJob runs it: another process on the same data.
async fn fsck_elsewhere(proxy: &Proxy) {
    let dir = proxy.data_dir.display().to_string();
    let cli = Cli::try_parse_from(["nixcache", "fsck", "--data-dir", &dir]).unwrap();
    let Command::Fsck(args) = cli.command else {
        panic!("not fsck");
    };
    nixcache::app::fsck(&args).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_report_fetches_the_limit_and_recorded_upkeep() {
    let dir = tempfile::tempdir().unwrap();
    let key = upstream_key();
    let upstream = Upstream::start(40).await;
    let entry = Entry::new("upkeep", sample_nar(5, 40_000), Compression::Zstd, &key);
    upstream.add(&entry);
    let proxy = Proxy::start(
        dir.path(),
        &[&upstream],
        &[key.public_key()],
        &["--max-size", "1G"],
    )
    .await;
    let before = status(&proxy).await;
    assert_eq!(
        before["upkeep"],
        serde_json::json!({"gc": null, "fsck": null}),
        "{before}"
    );
    assert_eq!(
        before["cache"]["max_size_bytes"],
        1u64 << 30,
        "the flag, before any GC"
    );
    // Series at 0 before the first count, so that rate() sees that count.
    let fresh = get(&client(), &proxy.url("/metrics")).await;
    let upstream_label = format!("upstream=\"{}/\"", upstream.url.trim_end_matches('/'));
    for line in [
        "nixcache_cache_lookups_total{kind=\"narinfo\",result=\"hit\"} 0".to_owned(),
        "nixcache_cache_lookups_total{kind=\"nar\",result=\"miss\"} 0".to_owned(),
        "nixcache_fills_refused_total{limit=\"bytes\"} 0".to_owned(),
        format!("nixcache_upstream_lookups_total{{{upstream_label},result=\"miss\"}} 0"),
        format!("nixcache_upstream_fetched_bytes_total{{{upstream_label},kind=\"nar\"}} 0"),
    ] {
        assert!(fresh.text().contains(&line), "{line} in\n{}", fresh.text());
    }

    let client = client();
    assert_eq!(
        get(&client, &proxy.url(&entry.narinfo_path())).await.status,
        StatusCode::OK
    );
    let nar = get(&client, &proxy.url(&format!("/nar/{}", entry.file_name()))).await;
    assert_eq!(nar.status, StatusCode::OK);
    proxy.wait_stored(&entry.file_name()).await;
    let filled = status(&proxy).await;
    let cache = &filled["cache"];
    assert_eq!(cache["fetched_bytes"], entry.file.len() as u64, "{filled}");
    assert!(
        cache["served_bytes"].as_u64().unwrap() >= entry.file.len() as u64,
        "{filled}"
    );
    // Younger than an hour: the last hour is all of it.
    let last_hour = &cache["last_hour"];
    assert_eq!(
        (last_hour["misses"].as_u64(), last_hour["hits"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(last_hour["fetched_bytes"], cache["fetched_bytes"]);

    fsck_elsewhere(&proxy).await;
    let report = proxy.collect_garbage(0).await;
    assert_eq!(report.nars_deleted, 1);
    let after = status(&proxy).await;
    let gc = &after["upkeep"]["gc"];
    assert_eq!(
        (gc["runs"].as_u64(), gc["failures"].as_u64()),
        (Some(1), Some(0)),
        "{after}"
    );
    assert_eq!(gc["last_result"], "ok");
    assert_eq!(gc["last_freed_bytes"], report.bytes_freed);
    assert!(
        gc["last_summary"]
            .as_str()
            .unwrap()
            .starts_with("evicted 1 narinfos and 1 NARs"),
        "{gc}"
    );
    assert_eq!(gc["last_ok_unix_ms"], gc["last_finished_unix_ms"]);
    let fsck = &after["upkeep"]["fsck"];
    assert_eq!(
        (fsck["runs"].as_u64(), fsck["last_result"].as_str()),
        (Some(1), Some("clean")),
        "{after}"
    );
    assert_eq!(
        after["cache"]["max_size_bytes"],
        1u64 << 30,
        "the flag wins over GC's 0"
    );

    let metrics = get(&client, &proxy.url("/metrics")).await;
    let text = metrics.text();
    for line in [
        "nixcache_upkeep_runs_total{kind=\"gc\"} 1".to_owned(),
        "nixcache_upkeep_runs_total{kind=\"fsck\"} 1".to_owned(),
        "nixcache_upkeep_last_run_failed{kind=\"gc\"} 0".to_owned(),
        "nixcache_upkeep_last_run_result{kind=\"gc\",result=\"ok\"} 1".to_owned(),
        "nixcache_upkeep_last_run_result{kind=\"gc\",result=\"over_limit\"} 0".to_owned(),
        "nixcache_upkeep_last_run_result{kind=\"fsck\",result=\"clean\"} 1".to_owned(),
        "nixcache_upkeep_last_run_result{kind=\"fsck\",result=\"problems_left\"} 0".to_owned(),
        format!(
            "nixcache_upkeep_freed_bytes_total{{kind=\"gc\"}} {}",
            report.bytes_freed
        ),
        format!(
            "nixcache_upstream_fetched_bytes_total{{{upstream_label},kind=\"nar\"}} {}",
            entry.file.len()
        ),
        format!("nixcache_upstream_lookups_total{{{upstream_label},result=\"hit\"}} 1"),
        "nixcache_cache_max_size_bytes 1073741824".to_owned(),
    ] {
        assert!(text.contains(&line), "{line} in\n{text}");
    }
}
