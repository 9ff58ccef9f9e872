//! NARs that fail verification or arrive incomplete are never delivered whole, never stored, and
//! fetched again on the next request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{get, sample_nar, upstream_key, wait_until, Entry, Fault, Mode, OneNar, TIMEOUT};
use nixcache_protocol::{Compression, SigningKey};
use reqwest::{header::RANGE, StatusCode};

async fn setup(e: &Entry, key: &SigningKey, extra: &[&str]) -> OneNar {
    OneNar::start(e.clone(), key, extra, None).await
}

fn entry(name: &str, compression: Compression, key: &SigningKey) -> Entry {
    Entry::new(name, sample_nar(21, 400_000), compression, key)
}

/// One GET of the NAR: either an error status, or a 200 whose body cannot be read completely.
async fn assert_not_delivered(s: &OneNar) {
    let response = s.client.get(&s.nar_url).send().await.unwrap();
    let status = response.status();
    if status == StatusCode::OK {
        let announced = response.content_length();
        let body = response.bytes().await;
        assert!(
            body.is_err(),
            "a complete 200 body of a bad NAR was delivered ({:?} bytes, announced {announced:?})",
            body.map(|b| b.len()).ok()
        );
    } else {
        assert!(status.is_server_error(), "unexpected status {status}");
    }
    let tmp_empty = wait_until(TIMEOUT, || async { s.proxy.tmp_files().is_empty() }).await;
    assert!(tmp_empty, "temp files left: {:?}", s.proxy.tmp_files());
    assert_eq!(s.proxy.stored_files(), Vec::<std::path::PathBuf>::new());
}

/// Fails twice (each time from the upstream), then succeeds once the upstream is fixed.
async fn fails_then_recovers(name: &str, compression: Compression, fault: Fault) {
    let key = upstream_key();
    let e = &entry(name, compression, &key);
    let s = setup(e, &key, &[]).await;
    s.upstream.set_fault(&e.upstream_nar_path(), Some(fault));
    assert_not_delivered(&s).await;
    assert_eq!(s.upstream.gets(&e.upstream_nar_path()), 1);
    assert_not_delivered(&s).await;
    assert_eq!(
        s.upstream.gets(&e.upstream_nar_path()),
        2,
        "the retry did not reach the upstream"
    );

    s.upstream.set_fault(&e.upstream_nar_path(), None);
    let got = get(&s.client, &s.nar_url).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.body == e.file, "NAR bytes differ once the upstream is fixed");
    assert_eq!(s.upstream.gets(&e.upstream_nar_path()), 3);
    s.proxy.wait_stored(&e.file_name()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_nar_is_refused_and_fetched_again() {
    // Uncompressed: only the hashes can notice the flipped byte.
    fails_then_recovers("corrupt", Compression::None, Fault::Corrupt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_xz_nar_is_refused_and_fetched_again() {
    fails_then_recovers("corrupt-xz", Compression::Xz, Fault::Corrupt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_nar_is_refused_and_fetched_again() {
    fails_then_recovers("truncated", Compression::Xz, Fault::Truncate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nar_not_matching_the_signed_nar_hash_is_refused() {
    let key = upstream_key();
    let e = entry("lying", Compression::Zstd, &key).with_wrong_nar_hash(&key);
    let s = setup(&e, &key, &[]).await;
    assert_not_delivered(&s).await;
    assert_eq!(s.upstream.gets(&e.upstream_nar_path()), 1);
    // The file was exactly the one named, so the narinfo itself is wrong: it is forgotten (a
    // retry of the same NAR cannot help) and the next narinfo request asks the upstream again.
    let again = s.client.get(&s.nar_url).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    let narinfo_gets = s.upstream.gets(&e.narinfo_path());
    get(&s.client, &s.proxy.url(&e.narinfo_path())).await.narinfo();
    assert_eq!(
        s.upstream.gets(&e.narinfo_path()),
        narinfo_gets + 1,
        "the narinfo was served from the cache"
    );
    assert_not_delivered(&s).await;
    assert_eq!(
        s.upstream.gets(&e.upstream_nar_path()),
        2,
        "the retry did not reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_upstream_body_hits_the_read_timeout() {
    let key = upstream_key();
    let e = entry("stalled", Compression::Xz, &key);
    let s = setup(&e, &key, &["--upstream-read-timeout", "300ms"]).await;
    let stall = Fault::Throttle {
        chunk: e.file.len() / 2,
        every: Duration::from_secs(30),
    };
    s.upstream.set_fault(&e.upstream_nar_path(), Some(stall));
    let started = Instant::now();
    assert_not_delivered(&s).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(s.upstream.gets(&e.upstream_nar_path()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_range_of_a_nar_failing_verification_is_not_delivered_complete() {
    let key = upstream_key();
    let e = entry("lying-ranged", Compression::None, &key).with_wrong_nar_hash(&key);
    let s = setup(&e, &key, &[]).await;
    let slow = Fault::Throttle {
        chunk: 64 << 10,
        every: Duration::from_millis(50),
    };
    s.upstream.set_fault(&e.upstream_nar_path(), Some(slow));
    let response = s
        .client
        .get(&s.nar_url)
        .header(RANGE, "bytes=0-1023")
        .send()
        .await
        .unwrap();
    if response.status() == StatusCode::PARTIAL_CONTENT {
        let body = response.bytes().await;
        assert!(
            body.is_err(),
            "got all {:?} bytes of a range of a NAR that fails verification",
            body.map(|b| b.len()).ok()
        );
    } else {
        assert!(response.status().is_server_error(), "{}", response.status());
    }
}

/// The NAR's status once the upstream misbehaves in `mode` (the narinfo is already known).
async fn nar_status_when_upstream(mode: Mode, extra: &[&str]) -> StatusCode {
    let key = upstream_key();
    let e = entry("unreachable-nar", Compression::Xz, &key);
    let s = setup(&e, &key, extra).await;
    s.upstream.set_mode(mode);
    let response = s.client.get(&s.nar_url).send().await.unwrap();
    let status = response.status();
    let body = response.bytes().await;
    assert!(
        body.is_ok() || status != StatusCode::OK,
        "200 OK with a cut body: {body:?}"
    );
    assert!(wait_until(TIMEOUT, || async { s.proxy.tmp_files().is_empty() }).await);
    assert_eq!(s.upstream.gets(&e.upstream_nar_path()), 1);
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn upstream_nar_error_before_any_byte_is_502() {
    assert_eq!(
        nar_status_when_upstream(Mode::Fail500, &[]).await,
        StatusCode::BAD_GATEWAY
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn upstream_nar_header_timeout_is_504() {
    let slow = Mode::Delay(Duration::from_secs(5));
    let status = nar_status_when_upstream(slow, &["--upstream-header-timeout", "300ms"]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
}

/// A NAR file is never empty: an upstream announcing `Content-Length: 0` (the narinfo without
/// FileSize) gets no client a complete, empty 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_nar_file_is_never_served_as_complete() {
    let key = upstream_key();
    let mut e = entry("empty", Compression::Xz, &key);
    e.info.file_size = None; // not covered by the signature
    let s = OneNar::start(e.clone(), &key, &[], None).await;
    s.upstream.put(&e.upstream_nar_path(), bytes::Bytes::new());
    let head = s.client.head(&s.nar_url).send().await.unwrap();
    assert_ne!(head.status(), StatusCode::OK, "HEAD promised an empty NAR");
    assert!(head.status().is_server_error(), "{}", head.status());
    let got = get(&s.client, &s.nar_url).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{:?}", got.body);
    let tmp_empty = wait_until(TIMEOUT, || async { s.proxy.tmp_files().is_empty() }).await;
    assert!(tmp_empty, "temp files left: {:?}", s.proxy.tmp_files());
    assert_eq!(s.proxy.stored_files(), Vec::<std::path::PathBuf>::new());
}
