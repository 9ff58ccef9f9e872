//! Connection limits (`--header-read-timeout`, `--idle-timeout`, `--max-connections`): slow or
//! idle clients are closed, the limit makes room by closing idle connections, the health
//! endpoints answer when every connection is busy, and a response in progress is never cut.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{get, random_bytes, read_rest, upstream_key, Entry, Fault, OneNar, TIMEOUT};
use nixcache_protocol::Compression;
use reqwest::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

/// A request's head without the blank line that ends it.
const HALF_SENT: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n";

async fn proxy(extra: &[&str], fault: Option<Fault>, nar_len: usize) -> OneNar {
    let key = upstream_key();
    let entry = Entry::new("conn", random_bytes(7, nar_len), Compression::None, &key);
    OneNar::start(entry, &key, extra, fault).await
}

/// A connection that has sent `bytes`.
async fn open(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Whether the server closes `stream` (end of file or reset) within `limit`; what it sends
/// before is skipped.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends a whole `GET /healthz` on `stream` and reads its response (`ok\n`, 3 bytes of body).
async fn healthz_on(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 1024];
    let read_all = async {
        while !raw.windows(4).any(|w| w == b"\r\n\r\n") || !raw.ends_with(b"ok\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before the response: {:?}",
                String::from_utf8_lossy(&raw)
            );
            raw.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(TIMEOUT, read_all).await.unwrap();
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
}

async fn metrics(s: &OneNar) -> String {
    get(&s.client, &s.proxy.url("/metrics")).await.text().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_silent_and_trickling_requests_are_closed_after_the_header_timeout() {
    let s = proxy(
        &["--header-read-timeout", "1s", "--idle-timeout", "30s"],
        None,
        1024,
    )
    .await;
    let addr = s.proxy.addr;
    let opened = Instant::now();
    let mut streams = Vec::new();
    for i in 0..20 {
        let sent: &[u8] = if i % 4 == 0 { b"" } else { HALF_SENT };
        streams.push(open(addr, sent).await);
    }
    // Slowloris proper: a header line every 300 ms, never the end; progress does not extend it.
    let trickler = tokio::spawn(async move {
        let mut stream = open(addr, HALF_SENT).await;
        let began = Instant::now();
        for i in 0..30 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if stream
                .write_all(format!("X-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return Some(began.elapsed());
            }
        }
        None
    });
    for (i, stream) in streams.iter_mut().enumerate() {
        assert!(
            closed_within(stream, Duration::from_secs(6)).await,
            "connection {i} still open {:?} after it opened (header timeout 1 s)",
            opened.elapsed()
        );
    }
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed before the timeout: {took:?}"
    );
    let trickled = trickler
        .await
        .unwrap()
        .expect("the trickling client was never cut");
    // Cut within the timeout (+ slack), not after 9 s of trickling.
    assert!(trickled < Duration::from_secs(5), "{trickled:?}");
    // The proxy serves as before, and says what it did.
    assert_eq!(
        get(&s.client, &s.proxy.url("/healthz")).await.status,
        StatusCode::OK
    );
    let text = metrics(&s).await;
    let line = text
        .lines()
        .find(|l| l.starts_with("nixcache_http_connections_closed_total{reason=\"header_timeout\"}"))
        .unwrap_or_else(|| panic!("no header_timeout count in\n{text}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 21.0, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_not_the_header_one() {
    let s = proxy(
        &["--header-read-timeout", "1s", "--idle-timeout", "3s"],
        None,
        1024,
    )
    .await;
    let mut stream = open(s.proxy.addr, b"").await;
    healthz_on(&mut stream).await;
    // Idle for longer than the header timeout: still open, and usable.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    healthz_on(&mut stream).await;
    let idle_from = Instant::now();
    assert!(
        !closed_within(&mut stream, Duration::from_millis(2400)).await,
        "closed {:?} into the 3 s idle timeout",
        idle_from.elapsed()
    );
    assert!(
        closed_within(&mut stream, Duration::from_secs(5)).await,
        "an idle connection still open {:?} after its last response (idle timeout 3 s)",
        idle_from.elapsed()
    );
    let text = metrics(&s).await;
    assert!(
        text.contains("nixcache_http_connections_closed_total{reason=\"idle_timeout\"}"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_idle_connections_make_room_and_health_answers() {
    // The timeouts are long: only the limit can close anything here.
    let flags = [
        "--max-connections",
        "8",
        "--header-read-timeout",
        "60s",
        "--idle-timeout",
        "60s",
    ];
    let s = proxy(&flags, None, 1024).await;
    let mut streams = Vec::new();
    for _ in 0..40 {
        streams.push(open(s.proxy.addr, HALF_SENT).await);
    }
    let asked = Instant::now();
    let health = tokio::time::timeout(
        Duration::from_secs(3),
        get(&common::client(), &s.proxy.url("/healthz")),
    )
    .await
    .expect("/healthz did not answer within 3 s with the connections used up");
    assert_eq!(health.status, StatusCode::OK, "after {:?}", asked.elapsed());
    let mut open_ones = 0;
    for stream in &mut streams {
        if !closed_within(stream, Duration::from_millis(200)).await {
            open_ones += 1;
        }
    }
    assert!(
        open_ones <= 8,
        "{open_ones} of 40 half-sent connections still open (limit 8)"
    );
    assert!(
        closed_within(&mut streams[0], Duration::ZERO).await,
        "the oldest one was kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_connection_busy_only_the_health_endpoints_answer() {
    // Two downloads that last ~7 s keep both connections of the limit busy.
    let slow = Fault::Throttle {
        chunk: 64 << 10,
        every: Duration::from_millis(300),
    };
    let s = proxy(&["--max-connections", "2"], Some(slow), 24 * (64 << 10)).await;
    let first = s.client.get(&s.nar_url).send().await.unwrap();
    let second = common::client().get(&s.nar_url).send().await.unwrap();
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );

    for probe in ["/healthz", "/readyz"] {
        let got = tokio::time::timeout(
            Duration::from_secs(2),
            get(&common::client(), &s.proxy.url(probe)),
        )
        .await
        .unwrap_or_else(|_| panic!("{probe} did not answer within 2 s"));
        assert_eq!(got.status, StatusCode::OK, "{probe}: {}", got.text());
    }
    let other = tokio::time::timeout(
        Duration::from_secs(2),
        get(&common::client(), &s.proxy.url("/nix-cache-info")),
    )
    .await
    .expect("no answer within 2 s");
    assert_eq!(other.status, StatusCode::SERVICE_UNAVAILABLE, "{}", other.text());
    assert_eq!(other.header("retry-after"), Some("1"));

    // The downloads were not disturbed.
    let (a, b) = tokio::join!(read_rest(first, Vec::new()), read_rest(second, Vec::new()));
    assert!(
        a == s.entry.file && b == s.entry.file,
        "a download was cut or damaged"
    );
    assert!(metrics(&s)
        .await
        .contains("nixcache_http_connections_probes_only_total 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_pausing_longer_than_the_timeouts_is_not_cut() {
    // Each pause of the upstream (1.2 s) is longer than both timeouts (500 ms).
    let slow = Fault::Throttle {
        chunk: 32 << 10,
        every: Duration::from_millis(1200),
    };
    let flags = ["--header-read-timeout", "500ms", "--idle-timeout", "500ms"];
    let s = proxy(&flags, Some(slow), 3 * (32 << 10)).await;
    let began = Instant::now();
    let response = s.client.get(&s.nar_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = read_rest(response, Vec::new()).await;
    assert!(
        began.elapsed() >= Duration::from_secs(2),
        "not slow: {:?}",
        began.elapsed()
    );
    assert!(body == s.entry.file, "cut after {} bytes", body.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_after_the_send_timeout() {
    // Larger than what the sockets of both ends buffer, so the proxy's writes are refused.
    let s = proxy(&["--send-timeout", "1s"], None, 48 << 20).await;
    let whole = get(&s.client, &s.nar_url).await;
    assert_eq!(whole.status, StatusCode::OK);
    s.proxy.wait_stored(&s.entry.file_name()).await;
    let request = format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", s.nar_path);
    let mut stalled = open(s.proxy.addr, request.as_bytes()).await;
    let closed = common::wait_until(Duration::from_secs(20), || async {
        metrics(&s)
            .await
            .contains("nixcache_http_connections_closed_total{reason=\"send_timeout\"} 1")
    })
    .await;
    assert!(
        closed,
        "a client reading nothing kept its connection: {}",
        metrics(&s).await
    );
    assert!(closed_within(&mut stalled, TIMEOUT).await);
}
