//! Processes sharing a data dir: one starting must never take the temp directory of one that
//! still runs, however long that one has written nothing there (it served only hits).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use common::{client, get, sample_nar, upstream_key, Entry, Proxy, Upstream};
use nixcache_protocol::Compression;
use reqwest::StatusCode;

/// Sets the modification time of `path` and of everything under it `by` back.
fn set_back(path: &Path, by: Duration) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            set_back(&entry.unwrap().path(), by);
        }
    }
    let file = std::fs::File::open(path).unwrap();
    file.set_modified(SystemTime::now() - by).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_process_keeps_the_temp_dir_of_a_live_idle_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let entry = Entry::new("idle", sample_nar(3, 200_000), Compression::Xz, &key);
    upstream.add(&entry);
    let first = Proxy::start(&data, &[&upstream], &[key.public_key()], &[]).await;
    // Unchanged for two hours, as when it served only hits all that time.
    let tmp = data.join("tmp");
    let own: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(own.len(), 1, "{own:?}");
    set_back(&own[0], Duration::from_secs(2 * 3600));

    let second = Proxy::start(&data, &[&upstream], &[key.public_key()], &[]).await;
    assert!(own[0].is_dir(), "the live process's temp dir was removed");

    // The first still fills a NAR (through its temp dir).
    let client = client();
    let info = get(&client, &first.url(&entry.narinfo_path())).await.narinfo();
    let got = get(&client, &first.url(&format!("/{}", info.url))).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert!(got.body == entry.file, "the NAR's bytes differ");
    first.wait_stored(&entry.file_name()).await;
    second.stop().await;
    first.stop().await;
}

/// On a filesystem that grants every lock (NFSv3 mounted `nolock`), a process on another host
/// looks unlocked: a starting process still keeps its temp dir, which changed within the day,
/// and removes it only once nothing in it changed for longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_lock_alone_does_not_make_a_temp_dir_abandoned() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let other = data.join("tmp").join("other-host-1234");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join(nixcache::scratch::LOCK_FILE), b"").unwrap();
    std::fs::write(other.join("partial.tmp"), b"partial").unwrap();
    set_back(&other, Duration::from_secs(20 * 3600));

    let first = Proxy::start(&data, &[&upstream], &[key.public_key()], &[]).await;
    assert!(
        other.join("partial.tmp").exists(),
        "a recently changed temp dir was removed"
    );
    first.stop().await;

    set_back(&other, nixcache::scratch::MIN_IDLE + Duration::from_secs(3600));
    let second = Proxy::start(&data, &[&upstream], &[key.public_key()], &[]).await;
    assert!(!other.exists(), "an idle, unlocked temp dir stayed");
    second.stop().await;
}
