//! GC against fills of the same NAR: GC removes a NAR's row and object under the NAR's lease,
//! which fills hold while they write it, so neither undoes the other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use clap::Parser;
use common::{client, get, random_bytes, upstream_key, Entry, Proxy, Upstream};
use nixcache::{
    cli::{Cli, Command},
    db::{LeaseClaim, LeaseKey},
};
use nixcache_protocol::{Compression, NarFile};
use reqwest::StatusCode;

/// `nixcache gc` down to nothing on the proxy's database and data dir.
async fn gc_everything(proxy: &Proxy) -> nixcache::gc::GcReport {
    let (url, data) = (proxy.sqlite_url(), proxy.data_dir.display().to_string());
    let argv = ["nixcache", "gc", "--gc-keep-recent", "0s", "--max-size", "0"];
    let argv = argv
        .into_iter()
        .chain(["--database-url", &url, "--data-dir", &data]);
    let Command::Gc(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    nixcache::app::collect_garbage(&args).await.unwrap()
}

async fn setup(dir: &std::path::Path) -> (Upstream, Entry, Proxy) {
    setup_with(dir, &[]).await
}

async fn setup_with(dir: &std::path::Path, extra: &[&str]) -> (Upstream, Entry, Proxy) {
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let e = Entry::new("raced", random_bytes(8, 100_000), Compression::Xz, &key);
    upstream.add(&e);
    let proxy = Proxy::start(dir, &[&upstream], &[key.public_key()], extra).await;
    (upstream, e, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_leaves_a_nar_that_a_fill_is_writing() {
    let dir = tempfile::tempdir().unwrap();
    let (_upstream, e, proxy) = setup(dir.path()).await;
    let c = client();
    get(&c, &proxy.url(&e.narinfo_path())).await.narinfo();
    assert_eq!(
        get(&c, &proxy.url(&format!("/nar/{}", e.file_name())))
            .await
            .status,
        StatusCode::OK
    );
    proxy.wait_stored(&e.file_name()).await;
    // Another replica is writing this NAR right now (it holds the fill lease).
    let db = nixcache::db::connect(&proxy.sqlite_url()).await.unwrap();
    let lease = LeaseKey::nar(&NarFile::parse(&e.file_name()).unwrap());
    let claim = db.claim_lease(
        &lease,
        "other-replica",
        "http://127.0.0.1:9",
        Duration::from_secs(60),
    );
    assert!(matches!(claim.await.unwrap(), LeaseClaim::Acquired));

    let report = gc_everything(&proxy).await;
    assert_eq!(report.nars_deleted, 0, "{report}");
    assert!(
        proxy.stored_file(&e.file_name()).is_some(),
        "GC deleted the object under a fill"
    );
    let file = NarFile::parse(&e.file_name()).unwrap();
    assert!(
        db.get_nar(&file).await.unwrap().is_some(),
        "GC deleted the row under a fill"
    );

    db.release_lease(&lease, "other-replica").await.unwrap();
    let report = gc_everything(&proxy).await;
    assert_eq!(report.nars_deleted, 1, "{report}");
    assert!(proxy.stored_file(&e.file_name()).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_waits_for_gc_to_finish_removing_its_nar() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, e, proxy) = setup(dir.path()).await;
    let c = client();
    get(&c, &proxy.url(&e.narinfo_path())).await.narinfo();
    // GC is removing this NAR (its lease has no address: nothing to stream from).
    let db = nixcache::db::connect(&proxy.sqlite_url()).await.unwrap();
    let lease = LeaseKey::nar(&NarFile::parse(&e.file_name()).unwrap());
    let claim = db.claim_lease(&lease, "gc-test", "", Duration::from_secs(60));
    assert!(matches!(claim.await.unwrap(), LeaseClaim::Acquired));

    let url = proxy.url(&format!("/nar/{}", e.file_name()));
    let request = tokio::spawn(async move { get(&c, &url).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        upstream.gets(&e.upstream_nar_path()),
        0,
        "fetched while GC held the NAR"
    );
    db.release_lease(&lease, "gc-test").await.unwrap();

    let got = request.await.unwrap();
    assert_eq!(
        got.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&got.body)
    );
    assert!(got.body == e.file);
    proxy.wait_stored(&e.file_name()).await;
}

/// Other work (GC, the scrub, an upload: a lease without an address) holding a NAR longer than a
/// fill waits: the client is told to come back (`503`, `Retry-After`), and nothing is fetched
/// under that lease (a copy from a replica without an address cannot be made).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_gives_up_on_other_work_holding_its_nar_too_long() {
    let dir = tempfile::tempdir().unwrap();
    // Waits at most twice the lease TTL + 5 s: 7 s.
    let (upstream, e, proxy) = setup_with(dir.path(), &["--lease-ttl", "1s"]).await;
    let c = client();
    get(&c, &proxy.url(&e.narinfo_path())).await.narinfo();
    let db = nixcache::db::connect(&proxy.sqlite_url()).await.unwrap();
    let lease = LeaseKey::nar(&NarFile::parse(&e.file_name()).unwrap());
    let claim = db.claim_lease(&lease, "replica-x/upload", "", Duration::from_secs(60));
    assert!(matches!(claim.await.unwrap(), LeaseClaim::Acquired));

    let url = proxy.url(&format!("/nar/{}", e.file_name()));
    let got = get(&c, &url).await;
    assert_eq!(
        got.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&got.body)
    );
    assert!(got.header("retry-after").is_some(), "{:?}", got.headers);
    assert_eq!(
        upstream.gets(&e.upstream_nar_path()),
        0,
        "fetched under another's lease"
    );

    db.release_lease(&lease, "replica-x/upload").await.unwrap();
    let got = get(&c, &url).await;
    assert_eq!(
        got.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&got.body)
    );
    assert!(got.body == e.file);
}
