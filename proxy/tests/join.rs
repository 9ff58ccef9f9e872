//! Clients that ask for a NAR while it is being downloaded join that download.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{get, random_bytes, read_rest, upstream_key, Entry, Fault, OneNar, TIMEOUT};
use nixcache_protocol::{Compression, SigningKey};
use reqwest::{header, StatusCode};

fn header_text(response: &reqwest::Response, name: header::HeaderName) -> String {
    response.headers().get(name).unwrap().to_str().unwrap().to_owned()
}

/// Reads until the first bytes of the body have arrived; returns them.
async fn first_bytes(response: &mut reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.is_empty() {
        let chunk = tokio::time::timeout(TIMEOUT, response.chunk())
            .await
            .unwrap()
            .unwrap();
        body.extend_from_slice(&chunk.expect("the body ended before any byte"));
    }
    body
}

/// An upstream sending the entry's NAR `chunk` bytes at a time, one chunk per `every`; the proxy
/// has the narinfo.
async fn throttled(e: Entry, key: &SigningKey, chunk: usize, every: Duration) -> OneNar {
    OneNar::start(e, key, &[], Some(Fault::Throttle { chunk, every })).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_clients_join_the_download_in_progress() {
    let key = upstream_key();
    let e = Entry::new("big", random_bytes(31, 8 << 20), Compression::None, &key);
    let s = throttled(e, &key, 1 << 20, Duration::from_millis(50)).await;
    let (e, nar_path) = (&s.entry, s.entry.upstream_nar_path());

    // Client A starts the download and receives its first bytes.
    let mut a = s.client.get(&s.nar_url).send().await.unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    let a_first = first_bytes(&mut a).await;

    // B (whole file) and C (a suffix) arrive while the upstream is still sending.
    let size = e.file.len();
    let start = size / 2 + 123;
    let b = s.client.get(&s.nar_url).send().await.unwrap();
    let c_request = s
        .client
        .get(&s.nar_url)
        .header(header::RANGE, format!("bytes={start}-"));
    let c = c_request.send().await.unwrap();
    assert!(
        !s.upstream.finished_sending(&nar_path),
        "B and C came too late to join"
    );
    assert_eq!(b.status(), StatusCode::OK);
    assert_eq!(c.status(), StatusCode::PARTIAL_CONTENT);
    // The one that started the download missed; the others joined it.
    assert_eq!(
        header_text(&a, header::HeaderName::from_static("x-cache-status")),
        "MISS"
    );
    for joined in [&b, &c] {
        assert_eq!(
            header_text(joined, header::HeaderName::from_static("x-cache-status")),
            "JOINED"
        );
    }
    let c_range = header_text(&c, header::CONTENT_RANGE);
    assert_eq!(c_range, format!("bytes {start}-{}/{size}", size - 1));
    assert_eq!(
        header_text(&c, header::CONTENT_LENGTH),
        (size - start).to_string()
    );

    let (a_body, b_body, c_body) = tokio::join!(
        read_rest(a, a_first),
        read_rest(b, Vec::new()),
        read_rest(c, Vec::new())
    );
    assert!(a_body == e.file, "A got {} bytes, not the file", a_body.len());
    assert!(b_body == e.file, "B got {} bytes, not the file", b_body.len());
    assert!(
        c_body[..] == e.file[start..],
        "C got {} bytes, not the suffix",
        c_body.len()
    );
    assert_eq!(s.upstream.gets(&nar_path), 1);
    s.proxy.wait_stored(&e.file_name()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_does_not_cancel_the_download() {
    let key = upstream_key();
    let e = Entry::new("abandoned", random_bytes(32, 2 << 20), Compression::Zstd, &key);
    let s = throttled(e, &key, 256 << 10, Duration::from_millis(40)).await;
    let (e, nar_path) = (&s.entry, s.entry.upstream_nar_path());

    let mut a = s.client.get(&s.nar_url).send().await.unwrap();
    first_bytes(&mut a).await;
    drop(a);
    assert!(
        !s.upstream.finished_sending(&nar_path),
        "hung up too late to matter"
    );

    s.proxy.wait_stored(&e.file_name()).await;
    let got = get(&s.client, &s.nar_url).await;
    assert!(got.body == e.file, "NAR bytes differ");
    assert_eq!(s.upstream.gets(&nar_path), 1);
}
