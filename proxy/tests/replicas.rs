//! Two replicas sharing one database and one NAR store behave as one cache: one upstream fetch
//! per NAR and narinfo, and a replica asked for a NAR another one is fetching streams it from
//! that replica as it arrives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{
    client, get, random_bytes, read_rest, upstream_key, wait_until, Entry, Fault, Mode, Proxy, Upstream,
    TIMEOUT,
};
use nixcache_protocol::{Compression, SigningKey};
use reqwest::StatusCode;

struct TwoReplicas {
    _dir: tempfile::TempDir,
    upstream: Upstream,
    a: Proxy,
    b: Proxy,
    entry: Entry,
}

/// Replicas `a` and `b` on one data dir (so one SQLite database, one NAR store, one key).
async fn two_replicas(entry: Entry, key: &SigningKey, fault: Option<Fault>) -> TwoReplicas {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    upstream.add(&entry);
    upstream.set_fault(&entry.upstream_nar_path(), fault);
    let keys = [key.public_key()];
    let a = Proxy::start(dir.path(), &[&upstream], &keys, &["--lease-ttl", "2s"]).await;
    let b = Proxy::start(dir.path(), &[&upstream], &keys, &["--lease-ttl", "2s"]).await;
    TwoReplicas {
        _dir: dir,
        upstream,
        a,
        b,
        entry,
    }
}

fn big_entry(key: &SigningKey, seed: u64) -> Entry {
    Entry::new("big", random_bytes(seed, 8 << 20), Compression::None, key)
}

const SLOW: Fault = Fault::Throttle {
    chunk: 1 << 20,
    every: Duration::from_millis(60),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_streams_another_replicas_download_as_it_arrives() {
    let key = upstream_key();
    let s = two_replicas(big_entry(&key, 41), &key, Some(SLOW)).await;
    let (e, client) = (&s.entry, client());
    let info = get(&client, &s.a.url(&e.narinfo_path())).await.narinfo();
    // Read-your-writes: B knows the narinfo A fetched.
    assert_eq!(get(&client, &s.b.url(&e.narinfo_path())).await.narinfo(), info);
    assert_eq!(s.upstream.gets(&e.narinfo_path()), 1);

    let nar_path = format!("/{}", info.url);
    let mut from_a = client.get(s.a.url(&nar_path)).send().await.unwrap();
    assert_eq!(from_a.status(), StatusCode::OK);
    let a_first = from_a.chunk().await.unwrap().unwrap();

    let mut from_b = client.get(s.b.url(&nar_path)).send().await.unwrap();
    assert_eq!(from_b.status(), StatusCode::OK);
    assert_eq!(from_b.content_length(), Some(e.file.len() as u64));
    let b_first = tokio::time::timeout(TIMEOUT, from_b.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        !s.upstream.finished_sending(&e.upstream_nar_path()),
        "B's first bytes came only after the whole download"
    );

    let a_body = read_rest(from_a, a_first.to_vec()).await;
    let b_body = read_rest(from_b, b_first.to_vec()).await;
    assert!(a_body == e.file && b_body == e.file, "a replica sent wrong bytes");
    assert_eq!(s.upstream.gets(&e.upstream_nar_path()), 1);

    // Once stored, both serve it from storage.
    s.a.wait_stored(&e.file_name()).await;
    assert!(get(&client, &s.b.url(&nar_path)).await.body == e.file);
    assert_eq!(s.upstream.gets(&e.upstream_nar_path()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_requests_on_both_replicas_cost_one_upstream_fetch() {
    let key = upstream_key();
    let s = two_replicas(big_entry(&key, 42), &key, Some(SLOW)).await;
    let e = &s.entry;
    // Slow narinfo answers, so the two replicas' lookups overlap.
    s.upstream.set_mode(Mode::Delay(Duration::from_millis(300)));
    let narinfo_urls = [s.a.url(&e.narinfo_path()), s.b.url(&e.narinfo_path())];
    let lookups: Vec<_> = (0..6)
        .map(|i| {
            let url = narinfo_urls[i % 2].clone();
            tokio::spawn(async move { get(&client(), &url).await.narinfo() })
        })
        .collect();
    let mut infos = Vec::new();
    for lookup in lookups {
        infos.push(lookup.await.unwrap());
    }
    assert!(infos.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        s.upstream.gets(&e.narinfo_path()),
        1,
        "narinfo asked upstream more than once"
    );
    s.upstream.set_mode(Mode::Normal);

    let nar_path = format!("/{}", infos[0].url);
    let urls = [s.a.url(&nar_path), s.b.url(&nar_path)];
    let downloads: Vec<_> = (0..8)
        .map(|i| {
            let url = urls[i % 2].clone();
            tokio::spawn(async move { get(&client(), &url).await })
        })
        .collect();
    for download in downloads {
        let got = download.await.unwrap();
        assert_eq!(got.status, StatusCode::OK);
        assert!(got.body == e.file, "wrong bytes");
    }
    assert_eq!(s.upstream.gets(&e.upstream_nar_path()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_fails_verification_fails_on_every_replica() {
    let key = upstream_key();
    let e = Entry::new("bad", random_bytes(43, 4 << 20), Compression::None, &key);
    let corrupt_and_slow = Fault::Throttle {
        chunk: 512 << 10,
        every: Duration::from_millis(40),
    };
    let s = two_replicas(e, &key, Some(corrupt_and_slow)).await;
    let e = &s.entry;
    // The upstream sends another NAR of the same size: every hash is wrong.
    s.upstream
        .put(&e.upstream_nar_path(), random_bytes(44, e.file.len()));
    let client = client();
    let info = get(&client, &s.a.url(&e.narinfo_path())).await.narinfo();
    let nar_path = format!("/{}", info.url);

    let mut from_a = client.get(s.a.url(&nar_path)).send().await.unwrap();
    let a_first = from_a.chunk().await.unwrap().unwrap();
    let from_b = client.get(s.b.url(&nar_path)).send().await.unwrap();
    // Each may have all bytes but the last; neither gets a complete body.
    let (a_body, b_body) = (
        read_until_error(from_a, a_first.len()).await,
        read_until_error(from_b, 0).await,
    );
    assert!(
        a_body.is_err() && b_body.is_err(),
        "a client got a complete body of a bad NAR"
    );
    assert_eq!(s.upstream.gets(&e.upstream_nar_path()), 1);
    assert!(s.a.stored_files().is_empty(), "a bad NAR was stored");
}

/// Reads the rest of a body; `Err` when it ends in an error or short of Content-Length.
async fn read_until_error(mut response: reqwest::Response, already: usize) -> Result<usize, String> {
    let length = response.content_length().unwrap_or(u64::MAX) as usize;
    let mut total = already;
    loop {
        match tokio::time::timeout(TIMEOUT, response.chunk()).await.unwrap() {
            Ok(Some(chunk)) => total += chunk.len(),
            Ok(None) if total == length => return Ok(total),
            Ok(None) => return Err(format!("ended at {total} of {length}")),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Another replica copying a fill is one of its clients: the fill runs on for it when the local
/// clients left; and once every client of both replicas left, both fills are cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_copying_a_fill_counts_as_its_client() {
    let key = upstream_key();
    let wanted = Entry::new("copied", random_bytes(45, 2 << 20), Compression::None, &key);
    let dropped = Entry::new("dropped", random_bytes(46, 4 << 20), Compression::None, &key);
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    // 2 MiB in 3.2 s, and 4 MiB in 12.8 s: longer than the 2 s a fill may go without clients.
    for (e, chunk) in [(&wanted, 32 << 10), (&dropped, 16 << 10)] {
        upstream.add(e);
        let slow = Fault::Throttle {
            chunk,
            every: Duration::from_millis(50),
        };
        upstream.set_fault(&e.upstream_nar_path(), Some(slow));
    }
    let (keys, extra) = (
        [key.public_key()],
        ["--lease-ttl", "2s", "--finish-abandoned-below", "0"],
    );
    let a = Proxy::start(dir.path(), &[&upstream], &keys, &extra).await;
    let b = Proxy::start(dir.path(), &[&upstream], &keys, &extra).await;
    let client = client();
    let started = |proxy: &Proxy, e: &Entry| {
        let request = client.get(proxy.url(&format!("/nar/{}", e.file_name())));
        async move {
            let mut response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let first = tokio::time::timeout(TIMEOUT, response.chunk()).await.unwrap();
            (response, first.unwrap().unwrap())
        }
    };
    for e in [&wanted, &dropped] {
        get(&client, &a.url(&e.narinfo_path())).await.narinfo();
    }

    // A fetches, B copies A's fill; A's own client leaves at once, B's reads on.
    let (from_a, _) = started(&a, &wanted).await;
    let (from_b, b_first) = started(&b, &wanted).await;
    drop(from_a);
    let b_body = read_rest(from_b, b_first.to_vec()).await;
    assert!(
        b_body == wanted.file,
        "B got {} bytes, not the file",
        b_body.len()
    );
    a.wait_stored(&wanted.file_name()).await;
    assert_eq!(upstream.gets(&wanted.upstream_nar_path()), 1);

    // Both clients leave: B's copy is cancelled, then A's fill, which no one follows any more.
    let clients = (started(&a, &dropped).await, started(&b, &dropped).await);
    drop(clients);
    let gone = wait_until(TIMEOUT, || async {
        a.tmp_files().is_empty() && upstream.open_bodies() == 0
    })
    .await;
    assert!(
        gone,
        "left: temp files {:?}, upstream bodies {}",
        a.tmp_files(),
        upstream.open_bodies()
    );
    assert!(!upstream.finished_sending(&dropped.upstream_nar_path()));
    assert!(a.stored_file(&dropped.file_name()).is_none());
}
