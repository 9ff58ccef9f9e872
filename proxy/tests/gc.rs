//! LRU eviction through real requests: the proxy fills up from an upstream, clients access
//! entries in a known order, `nixcache gc` (the CLI's code path) evicts exactly the least
//! recently used, on SQLite, PostgreSQL and MariaDB; a NAR being streamed while it is evicted
//! still reaches its client whole, on a local directory and on S3.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use clap::Parser;
use common::{client, get, random_bytes, read_rest, Entry, Proxy, Upstream};
use nixcache::{
    cli::{Cli, Command},
    db::{connect, testdb::TestDb, Engine},
    gc::GcReport,
};
use nixcache_protocol::{Compression, NarFile};
use reqwest::StatusCode;

const FLUSH: &str = "50ms";

/// Runs `nixcache gc` with these flags (plus `--gc-keep-recent 0s`).
async fn gc(flags: &[&str]) -> GcReport {
    let mut argv = vec!["nixcache", "gc", "--gc-keep-recent", "0s"];
    argv.extend(flags);
    let Command::Gc(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    nixcache::app::collect_garbage(&args).await.unwrap()
}

/// Fetches the narinfo and, with `nar`, the NAR of `entry` through the proxy.
async fn access(proxy: &Proxy, entry: &Entry, nar: bool) {
    let c = client();
    let got = get(&c, &proxy.url(&entry.narinfo_path())).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    if nar {
        let got = get(&c, &proxy.url(&format!("/nar/{}", entry.file_name()))).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body, entry.file);
    }
}

fn file_of(entry: &Entry) -> NarFile {
    NarFile::parse(&entry.file_name()).unwrap()
}

async fn evicts_least_recently_used(engine: Engine) {
    let Some(db) = TestDb::migrated(engine).await else {
        return;
    };
    let key = common::upstream_key();
    let upstream = Upstream::start(10).await;
    let entry =
        |name: &str, kib: usize| Entry::new(name, random_bytes(kib as u64, kib << 10), Compression::Xz, &key);
    let e: Vec<Entry> = (0..5).map(|i| entry(&format!("e{i}"), 10 * (i + 1))).collect();
    // Two store paths with one NAR: the same file, named by both narinfos.
    let shared = random_bytes(99, 25 << 10);
    let s1 = Entry::new("s1", shared.clone(), Compression::Xz, &key);
    let s2 = Entry::new("s2", shared, Compression::Xz, &key);
    assert_eq!(s1.file_name(), s2.file_name());
    for x in e.iter().chain([&s1, &s2]) {
        upstream.add(x);
    }
    let dir = tempfile::tempdir().unwrap();
    let url = db.url().to_owned();
    let flags = [
        "--database-url",
        &url,
        "--access-flush-interval",
        FLUSH,
        "--memory-cache-ttl",
        "1s",
    ];
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &flags).await;

    // Oldest first. s2 by its narinfo only: a NAR's access counts for every narinfo naming it.
    let order: [(&Entry, bool); 7] = [
        (&e[0], true),
        (&s1, true),
        (&e[1], true),
        (&e[2], true),
        (&s2, false),
        (&e[3], true),
        (&e[4], true),
    ];
    for (x, nar) in order {
        access(&proxy, x, nar).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let gets_before = upstream.object_gets();
    let total: u64 = e.iter().chain([&s2]).map(|x| x.file.len() as u64).sum();
    let freed = (e[0].file.len() + e[1].file.len()) as u64;
    let data_dir = dir.path().display().to_string();
    let max = (total - freed).to_string();
    let report = gc(&[
        "--data-dir",
        &data_dir,
        "--database-url",
        &url,
        "--max-size",
        &max,
    ])
    .await;

    assert_eq!(report.before.nar_bytes, total, "{report}");
    assert_eq!((report.narinfos_evicted, report.nars_deleted), (3, 2), "{report}");
    assert_eq!(
        (report.bytes_freed, report.size_after()),
        (freed, total - freed),
        "{report}"
    );
    assert!(!report.over_limit());
    let meta = connect(&url).await.unwrap();
    for (x, kept) in [
        (&e[0], false),
        (&s1, false),
        (&e[1], false),
        (&e[2], true),
        (&s2, true),
        (&e[3], true),
        (&e[4], true),
    ] {
        let row = meta.get_narinfo(x.store_path.hash()).await.unwrap();
        assert_eq!(row.is_some(), kept, "narinfo of {}", x.store_path);
    }
    for (x, kept) in [(&e[0], false), (&e[1], false), (&s2, true), (&e[2], true)] {
        assert_eq!(
            meta.get_nar(&file_of(x)).await.unwrap().is_some(),
            kept,
            "NAR of {}",
            x.store_path
        );
        assert_eq!(
            proxy.stored_file(&x.file_name()).is_some(),
            kept,
            "file of {}",
            x.store_path
        );
    }
    // Once the proxy's memory of them expired: the rest are hits, and an evicted path is simply
    // a miss again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    access(&proxy, &e[2], true).await;
    assert_eq!(upstream.object_gets(), gets_before, "e2 is still cached");
    access(&proxy, &s1, true).await;
    assert_eq!(
        upstream.object_gets(),
        gets_before + 1,
        "only s1's narinfo is fetched again"
    );
    access(&proxy, &e[0], true).await;
    assert_eq!(upstream.object_gets(), gets_before + 3);
    // A client that cached e1's narinfo itself asks for the NAR alone: fetched again, not a 404.
    let got = get(&client(), &proxy.url(&format!("/nar/{}", e[1].file_name()))).await;
    assert_eq!((got.status, got.body == e[1].file), (StatusCode::OK, true));
    assert_eq!(upstream.object_gets(), gets_before + 4);

    // Under the limit, nothing happens.
    let again = gc(&[
        "--data-dir",
        &data_dir,
        "--database-url",
        &url,
        "--max-size",
        "1G",
    ])
    .await;
    assert_eq!((again.narinfos_evicted, again.bytes_freed), (0, 0), "{again}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_evicts_least_recently_used() {
    evicts_least_recently_used(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_evicts_least_recently_used() {
    evicts_least_recently_used(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_evicts_least_recently_used() {
    evicts_least_recently_used(Engine::MySql).await;
}

/// A dry run reports the eviction a real run then does; a NAR that two narinfos name goes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_changes_nothing_and_shared_nars_go_once() {
    let key = common::upstream_key();
    let upstream = Upstream::start(10).await;
    let entries: Vec<Entry> = [(0, 0), (1, 0), (2, 2)]
        .map(|(i, seed)| {
            Entry::new(
                &format!("d{i}"),
                random_bytes(seed, 8 << 10),
                Compression::Zstd,
                &key,
            )
        })
        .to_vec();
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--access-flush-interval", "0s"];
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &flags).await;
    for x in &entries {
        upstream.add(x);
        access(&proxy, x, true).await;
        // Recorded before the next access, so the access order is the order here.
        proxy.wait_stored(&x.file_name()).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let data_dir = dir.path().display().to_string();
    // One run at a time: while another holds the GC lease, a run does nothing.
    let meta = connect(&proxy.sqlite_url()).await.unwrap();
    let lease = nixcache::db::LeaseKey::gc();
    meta.claim_lease(&lease, "other-gc", "", Duration::from_secs(60))
        .await
        .unwrap();
    let argv = ["nixcache", "gc", "--data-dir", &data_dir, "--max-size", "1"];
    let Command::Gc(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    let busy = nixcache::app::collect_garbage(&args)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        busy.contains("another garbage collection is running (held by other-gc)"),
        "{busy}"
    );
    assert_eq!(proxy.stored_files().len(), 2);
    meta.release_lease(&lease, "other-gc").await.unwrap();
    let report = gc(&["--data-dir", &data_dir, "--max-size", "1", "--dry-run"]).await;
    assert_eq!((report.narinfos_evicted, report.nars_deleted), (3, 2), "{report}");
    assert!(report.to_string().starts_with("dry run: "), "{report}");
    for x in &entries {
        assert!(proxy.stored_file(&x.file_name()).is_some());
    }
    let real = gc(&["--data-dir", &data_dir, "--max-size", "1"]).await;
    assert_eq!((real.narinfos_evicted, real.nars_deleted), (3, 2), "{real}");
    assert_eq!(real.bytes_freed, report.bytes_freed);
    assert!(proxy.stored_files().is_empty(), "{:?}", proxy.stored_files());
    proxy.stop().await;
}

/// Starts streaming `entry`'s NAR, evicts it while the client has read only part, then reads
/// the rest: every byte arrives.
async fn stream_survives_eviction(extra: &[String]) {
    let key = common::upstream_key();
    let upstream = Upstream::start(10).await;
    let big = Entry::new("big", random_bytes(7, 24 << 20), Compression::None, &key);
    upstream.add(&big);
    let dir = tempfile::tempdir().unwrap();
    let mut flags: Vec<&str> = extra.iter().map(String::as_str).collect();
    flags.extend(["--access-flush-interval", "0s"]);
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &flags).await;
    access(&proxy, &big, true).await;
    // Stored and recorded (an S3 upload ends after the client had its bytes): the next GET is a hit.
    let meta = connect(&proxy.sqlite_url()).await.unwrap();
    let stored = common::wait_until(common::TIMEOUT, || async {
        meta.get_nar(&file_of(&big)).await.unwrap().is_some()
    })
    .await;
    assert!(stored, "the NAR was never recorded");

    let response = client()
        .get(proxy.url(&format!("/nar/{}", big.file_name())))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut response = response;
    let first = response.chunk().await.unwrap().unwrap().to_vec();
    assert!(first.len() < big.file.len());
    let data_dir = dir.path().display().to_string();
    let mut gc_flags = vec!["--data-dir", &data_dir, "--max-size", "0"];
    let storage_flags: Vec<&str> = extra.iter().map(String::as_str).collect();
    gc_flags.extend(storage_flags.iter().copied());
    let report = gc(&gc_flags).await;
    assert_eq!(report.nars_deleted, 1, "{report}");
    let body = read_rest(response, first).await;
    assert!(
        body == big.file,
        "the streamed NAR changed ({} bytes)",
        body.len()
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_stream_survives_eviction() {
    stream_survives_eviction(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stream_survives_eviction() {
    let Some((_server, _bucket, flags)) = common::s3::server_with_bucket("gc").await else {
        return;
    };
    stream_survives_eviction(&flags).await;
}
