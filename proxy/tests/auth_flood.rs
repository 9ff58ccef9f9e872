//! Wrong upload passwords from clients that hang up at once: no more bcrypt checks run at a time
//! than the bound, no thread is spent on them beyond it, and NAR hits stay quick meanwhile.
//! Alone in its test binary: it counts the process's threads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{client, get, random_bytes, send, upstream_key, Entry, Proxy, Upstream};
use nixcache::http::BCRYPT_AT_ONCE;
use nixcache_protocol::Compression;
use reqwest::StatusCode;
use tokio::{io::AsyncWriteExt, net::TcpStream, time::Instant};

const USER: &str = "ci";
const PASSWORD: &str = "correct horse";
/// A realistic cost (htpasswd -B uses 5 by default, many set 10-12): ~100 ms a check here.
const COST: u32 = 11;
const FLOOD: usize = 60;
/// Threads the process may gain meanwhile (the blocking pool reading the NAR, and the like).
const THREAD_SLACK: usize = 8;

fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

/// This process's threads, from /proc/self/status.
fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line["Threads:".len()..].trim().parse().unwrap()
}

/// `nixcache_auth_hashes_in_flight`, if the proxy exports it.
async fn hashing(client: &reqwest::Client, proxy: &Proxy) -> Option<i64> {
    let text = get(client, &proxy.url("/metrics")).await.text().to_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("nixcache_auth_hashes_in_flight "))?;
    line.rsplit(' ').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_up_wrong_passwords_never_run_more_bcrypt_checks_than_the_bound() {
    let key = upstream_key();
    let entry = Entry::new("hit", random_bytes(11, 256 << 10), Compression::None, &key);
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("uploaders");
    let hash = bcrypt::hash(PASSWORD, COST).unwrap();
    std::fs::write(&creds, format!("{USER}:{hash}\n")).unwrap();
    let upstream = Upstream::start(10).await;
    upstream.add(&entry);
    let creds = creds.display().to_string();
    let flags = ["--allow-put", "--upload-credentials-file", creds.as_str()];
    let proxy = Proxy::start(
        &dir.path().join("data"),
        &[&upstream],
        &[key.public_key()],
        &flags,
    )
    .await;
    let client = client();
    let info = get(&client, &proxy.url(&entry.narinfo_path())).await.narinfo();
    let nar_url = proxy.url(&format!("/{}", info.url));
    assert!(get(&client, &nar_url).await.body == entry.file);
    proxy.wait_stored(&entry.file_name()).await;
    assert!(get(&client, &nar_url).await.body == entry.file, "not a hit");
    let baseline = threads();

    let request = format!(
        "PUT /nar/{}.nar HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 0\r\n\r\n",
        "0".repeat(52),
        basic(USER, "wrong")
    );
    let addr = proxy.addr;
    let flood = tokio::spawn(async move {
        for _ in 0..FLOOD {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            // Hang up at once: the proxy drops the request, not the check it started.
        }
    });

    let (mut most_threads, mut most_hashing, mut slowest_hit) = (baseline, 0, Duration::ZERO);
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        most_threads = most_threads.max(threads());
        most_hashing = most_hashing.max(hashing(&client, &proxy).await.unwrap_or(0));
        let began = Instant::now();
        let hit = get(&client, &nar_url).await;
        slowest_hit = slowest_hit.max(began.elapsed());
        assert!(hit.status == StatusCode::OK && hit.body == entry.file);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flood.await.unwrap();
    eprintln!(
        "threads: {baseline} before, at most {most_threads} during; bcrypt checks at once: at most \
         {most_hashing}; slowest NAR hit: {slowest_hit:?}"
    );
    assert!(
        most_threads <= baseline + THREAD_SLACK,
        "threads rose from {baseline} to {most_threads}: the checks of clients that hung up ran on"
    );
    assert!(
        most_hashing <= BCRYPT_AT_ONCE as i64,
        "{most_hashing} bcrypt checks at once (bound {BCRYPT_AT_ONCE})"
    );
    assert!(
        slowest_hit < Duration::from_secs(2),
        "a NAR hit took {slowest_hit:?}"
    );

    // Over: nothing left running, and a real uploader is let in (the NAR name is refused later).
    let idle = common::wait_until(common::TIMEOUT, || async {
        hashing(&client, &proxy).await == Some(0)
    })
    .await;
    assert!(
        idle,
        "bcrypt checks still running: {:?}",
        hashing(&client, &proxy).await
    );
    let put = client
        .put(proxy.url(&format!("/nar/{}.nar", "0".repeat(52))))
        .header("authorization", basic(USER, PASSWORD))
        .body("x");
    let got = send(put).await;
    assert!(
        got.status != StatusCode::UNAUTHORIZED && got.status != StatusCode::SERVICE_UNAVAILABLE,
        "{}: {}",
        got.status,
        got.text()
    );
}
