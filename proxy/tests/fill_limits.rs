//! Fills are bounded: no more than --max-fills run at once and their temp files stay under
//! --max-fill-bytes (the rest get 503 with Retry-After), and a fill whose clients all left is
//! cancelled (download, temp file, verifier thread) unless little is left to download.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{client, get, random_bytes, upstream_key, wait_until, Entry, Fault, Proxy, Upstream, TIMEOUT};
use nixcache_protocol::{Compression, SigningKey};
use reqwest::StatusCode;

/// These tests count the process's verifier threads: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Slow enough that no fill here finishes during a test's waits (3 MiB take 9.6 s, 4 MiB 12.8 s).
const SLOW: Fault = Fault::Throttle {
    chunk: 16 << 10,
    every: Duration::from_millis(50),
};

struct Setup {
    _dir: tempfile::TempDir,
    upstream: Upstream,
    proxy: Proxy,
    client: reqwest::Client,
}

impl Setup {
    /// The entries on one upstream (each `fault`-ed), their narinfos known to the proxy.
    async fn start(entries: &[&Entry], fault: Option<Fault>, key: &SigningKey, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let upstream = Upstream::start(10).await;
        for e in entries {
            upstream.add(e);
            upstream.set_fault(&e.upstream_nar_path(), fault);
        }
        let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], extra).await;
        let client = client();
        for e in entries {
            get(&client, &proxy.url(&e.narinfo_path())).await.narinfo();
        }
        Self {
            _dir: dir,
            upstream,
            proxy,
            client,
        }
    }

    fn nar_url(&self, e: &Entry) -> String {
        self.proxy.url(&format!("/nar/{}", e.file_name()))
    }

    /// A GET of `e`'s NAR that has received its first bytes (and stays connected).
    async fn started(&self, e: &Entry) -> reqwest::Response {
        let mut response = self.client.get(self.nar_url(e)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let first = tokio::time::timeout(TIMEOUT, response.chunk())
            .await
            .unwrap()
            .unwrap();
        assert!(first.is_some_and(|b| !b.is_empty()), "no first bytes");
        response
    }

    async fn metric(&self, series: &str) -> f64 {
        let text = get(&self.client, &self.proxy.url("/metrics"))
            .await
            .text()
            .to_owned();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    /// Waits (bounded) until nothing of any fill is left: no temp file, no fill or temp byte in
    /// the metrics, no upstream body being sent, no verifier thread.
    async fn assert_all_fills_gone(&self) {
        let gone = wait_until(TIMEOUT, || async {
            self.proxy.tmp_files().is_empty()
                && self.metric("nixcache_fills_in_flight").await == 0.0
                && self.metric("nixcache_fill_temp_bytes").await == 0.0
                && self.metric("nixcache_fill_reserved_bytes").await == 0.0
                && self.upstream.open_bodies() == 0
                && verifier_threads() == 0
        })
        .await;
        assert!(
            gone,
            "fills left: temp files {:?}, fills {}, temp bytes {}, upstream bodies open {}, verifier threads {}",
            self.proxy.tmp_files(),
            self.metric("nixcache_fills_in_flight").await,
            self.metric("nixcache_fill_temp_bytes").await,
            self.upstream.open_bodies(),
            verifier_threads()
        );
    }
}

/// Threads of this process named like the verifier (the proxy runs in the test process).
fn verifier_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim() == "nixcache-verify")
        })
        .count()
}

fn entries(key: &SigningKey, prefix: &str, n: u64, size: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            Entry::new(&name, random_bytes(100 + i, size), Compression::None, key)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_beyond_the_limit_get_503_and_abandoned_fills_are_cancelled() {
    let _serial = SERIAL.lock().await;
    let key = upstream_key();
    let running = entries(&key, "running", 4, 4 << 20);
    let refused = entries(&key, "refused", 6, 64 << 10);
    let all: Vec<&Entry> = running.iter().chain(&refused).collect();
    let extra = ["--max-fills", "4", "--finish-abandoned-below", "512K"];
    let s = Setup::start(&all, Some(SLOW), &key, &extra).await;
    let baseline_gets = s.upstream.object_gets();

    // Four clients each start a fill and stay connected: every slot is taken.
    let mut clients = Vec::new();
    for e in &running {
        clients.push(s.started(e).await);
    }
    // Six more misses wait a little for a slot, then are told to come back.
    let answers = futures::future::join_all(refused.iter().map(|e| s.client.get(s.nar_url(e)).send())).await;
    for answer in answers {
        let answer = answer.unwrap();
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        let retry_after = answer.headers().get(reqwest::header::RETRY_AFTER);
        let seconds = retry_after.and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        assert!(seconds.is_some_and(|s| s > 0), "Retry-After: {retry_after:?}");
    }
    assert_eq!(s.metric("nixcache_fills_in_flight").await, 4.0);
    assert_eq!(
        s.metric("nixcache_fills_refused_total{limit=\"fills\"}").await,
        6.0
    );
    assert_eq!(
        s.upstream.object_gets() - baseline_gets,
        4,
        "refused misses reached the upstream"
    );

    // Every client hangs up: the fills, far from done, are cancelled.
    assert_eq!(verifier_threads(), 4);
    drop(clients);
    s.assert_all_fills_gone().await;
    for e in &running {
        assert!(
            !s.upstream.finished_sending(&e.upstream_nar_path()),
            "an abandoned fill was downloaded to its end"
        );
    }
    assert_eq!(s.metric("nixcache_fills_abandoned_total").await, 4.0);
    assert!(s.proxy.stored_files().is_empty(), "{:?}", s.proxy.stored_files());

    // The slots are free again.
    s.upstream.set_fault(&refused[0].upstream_nar_path(), None);
    let got = get(&s.client, &s.nar_url(&refused[0])).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.body == refused[0].file, "wrong bytes");
    s.proxy.wait_stored(&refused[0].file_name()).await;
    s.assert_all_fills_gone().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_fill_with_little_left_is_finished_and_stored() {
    let _serial = SERIAL.lock().await;
    let key = upstream_key();
    // 2 MiB at 640 KiB/s: the client is gone for 2 s while less than the default 16M is left.
    let e = &entries(&key, "almost", 1, 2 << 20)[0];
    let moderate = Fault::Throttle {
        chunk: 32 << 10,
        every: Duration::from_millis(50),
    };
    let s = Setup::start(&[e], Some(moderate), &key, &[]).await;
    drop(s.started(e).await);
    assert!(
        !s.upstream.finished_sending(&e.upstream_nar_path()),
        "hung up too late to matter"
    );
    s.proxy.wait_stored(&e.file_name()).await;
    s.assert_all_fills_gone().await;
    assert_eq!(s.metric("nixcache_fills_abandoned_total").await, 0.0);
    let got = get(&s.client, &s.nar_url(e)).await;
    assert!(got.body == e.file, "NAR bytes differ");
    assert_eq!(s.upstream.gets(&e.upstream_nar_path()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_over_the_temp_byte_budget_gets_503_until_room_is_made() {
    let _serial = SERIAL.lock().await;
    let key = upstream_key();
    let pair = entries(&key, "budget", 2, 3 << 20);
    let extra = ["--max-fill-bytes", "5M", "--finish-abandoned-below", "0"];
    let s = Setup::start(&[&pair[0], &pair[1]], Some(SLOW), &key, &extra).await;

    let first = s.started(&pair[0]).await;
    // 3 MiB more would make 6 MiB of temp files: refused.
    let second = s.client.get(s.nar_url(&pair[1])).send().await.unwrap();
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(second.headers().contains_key(reqwest::header::RETRY_AFTER));
    assert_eq!(
        s.metric("nixcache_fill_reserved_bytes").await,
        pair[0].file.len() as f64
    );
    assert_eq!(
        s.metric("nixcache_fills_refused_total{limit=\"bytes\"}").await,
        1.0
    );
    assert!(s.metric("nixcache_fill_temp_bytes").await > 0.0);

    // Once the first is abandoned (and cancelled), the second fits.
    drop(first);
    s.assert_all_fills_gone().await;
    s.upstream.set_fault(&pair[1].upstream_nar_path(), None);
    let got = get(&s.client, &s.nar_url(&pair[1])).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.body == pair[1].file, "wrong bytes");
    s.proxy.wait_stored(&pair[1].file_name()).await;
    s.assert_all_fills_gone().await;
}
