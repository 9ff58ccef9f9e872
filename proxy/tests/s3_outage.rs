//! `--storage s3` while the S3 server is down: a stored NAR answers 503 in bounded time (logged),
//! a missed NAR may still reach its client (verified) but nothing is recorded, and once S3 is
//! back both are served again, without restarting the proxy.
//! One test only: it sets the AWS credential variables, which are process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{client, get, sample_nar, upstream_key, wait_until, Entry, Logs, Proxy, Upstream, TIMEOUT};
use nixcache_protocol::{Compression, NarFile};
use reqwest::StatusCode;

/// Longest a request may take while S3 refuses connections (the SDK retries, with backoff).
const OUTAGE_BOUND: Duration = Duration::from_secs(8);

fn nar_path(entry: &Entry) -> String {
    format!("/nar/{}", entry.file_name())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_fails_cleanly_records_nothing_and_recovers() {
    let logs = Logs::capture();
    let Some((mut server, bucket, flags)) = common::s3::server_with_bucket("cache").await else {
        return;
    };
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let key = upstream_key();
    let stored = Entry::new("stored-before", sample_nar(11, 1 << 20), Compression::Zstd, &key);
    let missed = Entry::new("missed-during", sample_nar(12, 1 << 20), Compression::Zstd, &key);
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    upstream.add(&stored);
    upstream.add(&missed);
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &flags).await;
    let db = nixcache::db::connect(&proxy.sqlite_url()).await.unwrap();
    let client = client();
    let (stored_object, missed_object) = (
        common::s3::object_path(&server, &bucket, "cache", &stored.file_name()),
        common::s3::object_path(&server, &bucket, "cache", &missed.file_name()),
    );
    let recorded = |e: &Entry| {
        let (db, file) = (db.clone(), NarFile::parse(&e.file_name()).unwrap());
        async move { db.get_nar(&file).await.unwrap().is_some() }
    };

    get(&client, &proxy.url(&stored.narinfo_path())).await.narinfo();
    let got = get(&client, &proxy.url(&nar_path(&stored))).await;
    assert!(got.status == StatusCode::OK && got.body == stored.file);
    let in_s3 = wait_until(TIMEOUT, || async {
        stored_object.is_file() && recorded(&stored).await
    })
    .await;
    assert!(in_s3, "not stored in S3 before the outage");

    assert_eq!(get(&client, &proxy.url("/readyz")).await.text(), "ready\n");
    server.stop();

    // Not ready (so Kubernetes takes the pod out of the Service), yet alive.
    let got = get(&client, &proxy.url("/readyz")).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(got.text(), "not ready: storage unreachable\n");
    assert_eq!(get(&client, &proxy.url("/healthz")).await.status, StatusCode::OK);

    // A stored NAR: 503 with the fixed message, soon, and the cause in the log.
    let started = Instant::now();
    let got = get(&client, &proxy.url(&nar_path(&stored))).await;
    let took = started.elapsed();
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE, "{}", got.text());
    assert_eq!(got.text(), "cache storage unavailable\n");
    assert!(took < OUTAGE_BOUND, "a stored NAR took {took:?} to fail");
    let logged = logs.lines_with(&[
        "request failed",
        "status=503",
        "storage backend failed while reading",
    ]);
    assert!(
        logged.iter().any(|l| l.contains(&stored.file_name())),
        "no log of the failed read: {}",
        logs.text()
    );

    // Narinfos need no storage.
    get(&client, &proxy.url(&missed.narinfo_path())).await.narinfo();

    // A miss: streamed from the upstream as it is verified, but not stored, so not recorded.
    let started = Instant::now();
    let response = client.get(proxy.url(&nar_path(&missed))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The fill fails (and cuts its readers) as soon as the upload fails: a client may get
    // the whole verified body first, or be cut off; never other bytes.
    if let Ok(body) = response.bytes().await {
        assert!(body == missed.file, "a miss during the outage got wrong bytes");
    }
    let fill_failed = [
        "NAR fill failed",
        &format!("nar={}", missed.file_name()),
        "storage backend failed while uploading",
    ];
    let logged = wait_until(TIMEOUT, || async { !logs.lines_with(&fill_failed).is_empty() }).await;
    assert!(logged, "no log of the failed fill: {}", logs.text());
    let took = started.elapsed();
    assert!(took < OUTAGE_BOUND, "the fill took {took:?} to give up");
    assert!(!recorded(&missed).await, "a NAR that S3 never got is recorded");
    assert!(!missed_object.exists());
    // The failure is logged before the fill ends (lease released, then the temp file removed).
    let cleaned = wait_until(TIMEOUT, || async { proxy.tmp_files().is_empty() }).await;
    assert!(cleaned, "{:?}", proxy.tmp_files());

    // S3 is back: ready again, and both are served, without restarting the proxy.
    server.start_again().await.unwrap();
    assert_eq!(get(&client, &proxy.url("/readyz")).await.status, StatusCode::OK);
    let got = get(&client, &proxy.url(&nar_path(&stored))).await;
    assert!(
        got.status == StatusCode::OK && got.body == stored.file,
        "{:?}",
        got.status
    );
    let got = get(&client, &proxy.url(&nar_path(&missed))).await;
    assert!(
        got.status == StatusCode::OK && got.body == missed.file,
        "{:?}",
        got.status
    );
    let in_s3 = wait_until(TIMEOUT, || async {
        missed_object.is_file() && recorded(&missed).await
    })
    .await;
    assert!(in_s3, "the missed NAR was not stored after the outage");
    assert!(std::fs::read(missed_object).unwrap() == missed.file);
    assert_eq!(upstream.gets(&stored.upstream_nar_path()), 1);
    assert_eq!(
        upstream.gets(&missed.upstream_nar_path()),
        2,
        "fetched again after the outage"
    );
    assert_eq!(server.open_uploads().unwrap(), 0);
}
