//! `--storage s3` end to end: a fill goes to the bucket (multipart, under the prefix), later
//! requests and ranges are served from it, nothing is kept under the local `nar/` dir.
//! One test only: it sets the AWS credential variables, which are process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{get, sample_nar, send, upstream_key, wait_until, Entry, OneNar, TIMEOUT};
use nixcache_protocol::Compression;
use reqwest::{header, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nars_are_stored_in_and_served_from_s3() {
    let Some((server, bucket, flags)) = common::s3::server_with_bucket("cache").await else {
        return;
    };
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let key = upstream_key();
    // Above the 8 MiB part size, so the fill is uploaded in parts.
    let entry = Entry::new("in-s3", sample_nar(7, 12 << 20), Compression::None, &key);
    let s = OneNar::start(entry, &key, &flags, None).await;

    let got = get(&s.client, &s.nar_url).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.body == s.entry.file, "NAR bytes differ");
    let object = common::s3::object_path(&server, &bucket, "cache", &s.entry.file_name());
    assert!(
        wait_until(TIMEOUT, || async { object.is_file() }).await,
        "not stored at {}",
        object.display()
    );
    assert!(
        std::fs::read(&object).unwrap() == s.entry.file,
        "stored object differs"
    );
    assert!(s.proxy.stored_files().is_empty(), "{:?}", s.proxy.stored_files());
    assert!(s.proxy.tmp_files().is_empty(), "{:?}", s.proxy.tmp_files());

    let again = get(&s.client, &s.nar_url).await;
    assert!(again.status == StatusCode::OK && again.body == s.entry.file);
    let ranged = send(
        s.client
            .get(&s.nar_url)
            .header(header::RANGE, "bytes=8388600-8388700"),
    )
    .await;
    assert_eq!(ranged.status, StatusCode::PARTIAL_CONTENT);
    assert!(ranged.body == s.entry.file[8_388_600..=8_388_700]);
    assert_eq!(
        s.upstream.gets(&s.entry.upstream_nar_path()),
        1,
        "served from S3, not upstream"
    );
    assert_eq!(server.open_uploads().unwrap(), 0);
}
