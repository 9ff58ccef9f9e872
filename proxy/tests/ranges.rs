//! Range requests and HEAD on NARs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{get, raw_request, sample_nar, send, upstream_key, Entry, OneNar};
use nixcache_protocol::Compression;
use reqwest::{header, StatusCode};

/// A proxy that knows the narinfo of one NAR (not fetched yet).
async fn setup() -> OneNar {
    let key = upstream_key();
    let entry = Entry::new("ranged", sample_nar(41, 100_000), Compression::Xz, &key);
    OneNar::start(entry, &key, &[], None).await
}

/// Same, with the NAR fetched and stored.
async fn stored() -> OneNar {
    let s = setup().await;
    let got = get(&s.client, &s.proxy.url(&s.nar_path)).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.body == s.entry.file);
    s.proxy.wait_stored(&s.entry.file_name()).await;
    s
}

async fn ranged(s: &OneNar, range: &str) -> common::Got {
    send(
        s.client
            .get(s.proxy.url(&s.nar_path))
            .header(header::RANGE, range),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_ranges_of_a_stored_nar() {
    let s = stored().await;
    let file = &s.entry.file;
    let size = file.len();
    let cases = [
        ("bytes=0-0", 0, 0),
        ("bytes=-1", size - 1, size - 1),
        ("bytes=10-", 10, size - 1),
        ("bytes=5-9", 5, 9),
        ("bytes=100-999999999", 100, size - 1),
    ];
    for (range, first, last) in cases {
        let got = ranged(&s, range).await;
        assert_eq!(got.status, StatusCode::PARTIAL_CONTENT, "{range}");
        let expected_range = format!("bytes {first}-{last}/{size}");
        assert_eq!(
            got.header("content-range"),
            Some(expected_range.as_str()),
            "{range}"
        );
        let expected_len = (last - first + 1).to_string();
        assert_eq!(
            got.header("content-length"),
            Some(expected_len.as_str()),
            "{range}"
        );
        assert!(got.body[..] == file[first..=last], "{range}: wrong bytes");
    }
    assert_eq!(s.upstream.gets(&s.entry.upstream_nar_path()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsatisfiable_and_multi_ranges() {
    let s = stored().await;
    let size = s.entry.file.len();
    for range in [
        format!("bytes={size}-"),
        format!("bytes={}-", size + 10),
        "bytes=-0".into(),
    ] {
        let got = ranged(&s, &range).await;
        assert_eq!(got.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        let expected = format!("bytes */{size}");
        assert_eq!(got.header("content-range"), Some(expected.as_str()), "{range}");
    }
    let got = ranged(&s, "bytes=0-1,5-6").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("content-range"), None);
    assert!(got.body == s.entry.file, "multi-range did not get the whole file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_of_a_stored_nar_has_length_and_no_body() {
    let s = stored().await;
    let raw = raw_request(s.proxy.addr, "HEAD", &s.nar_path).await;
    assert_eq!(raw.status, 200, "{}", raw.head);
    let length = format!("content-length: {}", s.entry.file.len());
    assert!(raw.head.to_ascii_lowercase().contains(&length), "{}", raw.head);
    assert!(raw.body.is_empty(), "HEAD sent {} body bytes", raw.body.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_before_the_nar_is_fetched_uses_the_narinfo() {
    let s = setup().await;
    let raw = raw_request(s.proxy.addr, "HEAD", &s.nar_path).await;
    assert_eq!(raw.status, 200, "{}", raw.head);
    let length = format!("content-length: {}", s.entry.info.file_size.unwrap());
    assert!(raw.head.to_ascii_lowercase().contains(&length), "{}", raw.head);
    assert!(raw.body.is_empty());
    assert_eq!(
        s.upstream.gets(&s.entry.upstream_nar_path()),
        0,
        "HEAD downloaded the NAR"
    );
    assert!(s.proxy.stored_files().is_empty());
    assert!(s.proxy.tmp_files().is_empty());
}
