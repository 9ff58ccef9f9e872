//! NAR listings (`/<hash>.ls`) and build logs (`/log/<drv>`): pulled through from the upstream
//! (which sends them encoded, as cache.nixos.org sends `br`), stored and served decoded to any
//! client, HEAD and ranges, a miss remembered, uploads (encoded or not) behind the credentials.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;

use common::data::store_path;
use common::writable::{self, basic, PASSWORD, USER};
use common::{client, random_bytes, send, upstream_key, Fault, Proxy, Upstream};
use reqwest::StatusCode;

const LISTING: &str = r#"{"version":1,"root":{"type":"directory","entries":{"bin":{"type":"directory","entries":{"hello":{"type":"regular","size":12,"executable":true,"narOffset":400}}}}}}"#;

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = brotli::CompressorWriter::new(&mut out, 4096, 9, 22);
    writer.write_all(data).unwrap();
    drop(writer);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// A build log: text, long enough to span several chunks.
fn build_log() -> Vec<u8> {
    (0..20_000)
        .flat_map(|i| format!("building step {i} of hello-2.12\n").into_bytes())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_and_logs_are_pulled_through_decoded_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let hash = store_path("hello-2.12").hash().to_string();
    let drv = format!("log/{}", store_path("hello-2.12.drv"));
    let (listing_path, log_path) = (format!("/{hash}.ls"), format!("/{drv}"));
    upstream.put_encoded(&listing_path, brotli(LISTING.as_bytes()), "br");
    let log = build_log();
    upstream.put_encoded(&log_path, gzip(&log), "gzip");
    let key = upstream_key();
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let client = client();

    for (path, body, mime) in [
        (&listing_path, LISTING.as_bytes(), "application/json"),
        (&log_path, &log[..], "text/plain; charset=utf-8"),
    ] {
        let first = send(client.get(proxy.url(path))).await;
        assert_eq!(first.status, StatusCode::OK, "{path}: {}", first.text());
        assert_eq!(&first.body[..], body, "{path}: served decoded");
        assert_eq!(first.header("content-encoding"), None, "{path}");
        assert_eq!(first.header("content-type"), Some(mime));
        assert_eq!(first.header("x-cache-status"), Some("MISS"));
        let again = send(client.get(proxy.url(path))).await;
        assert_eq!(&again.body[..], body);
        assert_eq!(again.header("x-cache-status"), Some("HIT"));
        assert_eq!(upstream.gets(path), 1, "{path}: asked upstream once");
        let head = send(client.head(proxy.url(path))).await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(
            head.header("content-length"),
            Some(body.len().to_string().as_str())
        );
        assert!(head.body.is_empty());
        let etag = again.header("etag").unwrap().to_owned();
        let cached = send(client.get(proxy.url(path)).header("if-none-match", &etag)).await;
        assert_eq!(cached.status, StatusCode::NOT_MODIFIED, "{path}");
    }
    let listing = send(client.get(proxy.url(&listing_path))).await;
    assert_eq!(
        listing.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let part = send(client.get(proxy.url(&log_path)).header("range", "bytes=100-199")).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&part.body[..], &log[100..200]);
    assert_eq!(part.header("cache-control"), Some("public, max-age=300"));

    // Stored as the cache serves them, under the paths it serves them at.
    assert!(proxy.stored_file(&format!("{hash}.ls")).is_some());
    let metrics = send(client.get(proxy.url("/metrics"))).await;
    let served = format!(
        "nixcache_served_bytes_total{{kind=\"log\"}} {}",
        log.len() * 2 + 100
    );
    assert!(
        metrics.text().contains(&served),
        "{served} in\n{}",
        metrics.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_bad_names_and_bad_upstream_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let client = client();

    // A miss is remembered, as a narinfo's: asked once, and said so to caches in front.
    let missing = format!("/{}.ls", store_path("absent").hash());
    for _ in 0..3 {
        let got = send(client.get(proxy.url(&missing))).await;
        assert_eq!(got.status, StatusCode::NOT_FOUND);
        assert!(got
            .header("cache-control")
            .unwrap()
            .starts_with("public, max-age="));
    }
    assert_eq!(upstream.gets(&missing), 1);

    for bad in ["/log/hello.drv", "/log/x/y", "/abc.ls", "/log/..%2f..%2fetc"] {
        let got = send(client.get(proxy.url(bad))).await;
        assert_eq!(got.status, StatusCode::BAD_REQUEST, "{bad}: {}", got.text());
    }

    // Bytes that are not what their Content-Encoding says: 502, nothing kept, asked again.
    let broken = format!("/log/{}", store_path("broken.drv"));
    let mut garbled = gzip(&build_log());
    garbled.truncate(garbled.len() / 2);
    upstream.put_encoded(&broken, garbled, "gzip");
    let got = send(client.get(proxy.url(&broken))).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text());
    let got = send(client.get(proxy.url(&broken))).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert_eq!(upstream.gets(&broken), 2);
    // An encoding nobody can decode is refused too.
    let odd = format!("/{}.ls", store_path("odd").hash());
    upstream.put_encoded(&odd, random_bytes(1, 100), "compress");
    assert_eq!(
        send(client.get(proxy.url(&odd))).await.status,
        StatusCode::BAD_GATEWAY
    );
    // An upstream that fails mid-body failed; its bytes did not fail verification.
    let cut = format!("/log/{}", store_path("cut.drv"));
    upstream.put(&cut, build_log());
    upstream.set_fault(&cut, Some(Fault::Truncate));
    let got = send(client.get(proxy.url(&cut))).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert!(got.text().contains("upstream cache failed"), "{}", got.text());
    assert!(proxy.stored_files().is_empty(), "{:?}", proxy.stored_files());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_of_listings_logs_and_encoded_narinfos() {
    let w = writable::start(&["--allow-put", "--max-upload-size", "512K"]).await;
    let auth = basic(USER, PASSWORD);
    let hash = store_path("uploaded").hash().to_string();
    let listing = format!("/{hash}.ls");
    let log_path = format!("/log/{}", store_path("uploaded.drv"));

    assert_eq!(
        w.put(&listing, LISTING, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        w.put(&listing, LISTING, Some("Basic eDp5")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let put = w.put(&listing, LISTING, Some(&auth)).await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());
    assert_eq!(w.get(&listing).await.text(), LISTING);
    // Nothing stored is replaced.
    let again = w.put(&listing, "{}", Some(&auth)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(w.get(&listing).await.text(), LISTING);

    // Nix 2.32+ with log-compression / narinfo-compression sends them encoded.
    let log = build_log();
    let request = w
        .client
        .put(w.proxy.url(&log_path))
        .header("authorization", &auth)
        .header("content-encoding", "zstd")
        .body(zstd::encode_all(&log[..], 3).unwrap());
    assert_eq!(send(request).await.status, StatusCode::CREATED);
    let got = w.get(&log_path).await;
    assert_eq!(&got.body[..], &log[..]);
    assert_eq!(got.header("content-encoding"), None);

    let entry = writable::upload_entry("encoded-narinfo");
    let nar_path = format!("/nar/{}", entry.file_name());
    assert_eq!(
        w.put(&nar_path, entry.file.clone(), Some(&auth)).await.status,
        StatusCode::CREATED
    );
    let request = w
        .client
        .put(w.proxy.url(&entry.narinfo_path()))
        .header("authorization", &auth)
        .header("content-encoding", "gzip")
        .body(gzip(entry.narinfo_text().as_bytes()));
    let put = send(request).await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());
    assert_eq!(
        w.get(&entry.narinfo_path()).await.narinfo().store_path,
        entry.store_path
    );

    // Bodies that do not decode, or say an encoding nobody can decode: 400, nothing stored.
    let bad_log = format!("/log/{}", store_path("bad.drv"));
    let request = w
        .client
        .put(w.proxy.url(&bad_log))
        .header("authorization", &auth)
        .header("content-encoding", "br")
        .body("not brotli at all");
    let put = send(request).await;
    assert_eq!(put.status, StatusCode::BAD_REQUEST, "{}", put.text());
    assert!(put.text().contains("br decoding failed"), "{}", put.text());
    let request = w
        .client
        .put(w.proxy.url(&bad_log))
        .header("authorization", &auth)
        .header("content-encoding", "compress")
        .body("x");
    assert_eq!(send(request).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(w.get(&bad_log).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        w.put("/log/not-a-drv", "x", Some(&auth)).await.status,
        StatusCode::BAD_REQUEST
    );
    // `--max-upload-size` holds for what is sent (the log compressed fits, plain it does not).
    let big = format!("/log/{}", store_path("big.drv"));
    let put = w.put(&big, log.clone(), Some(&auth)).await;
    assert_eq!(put.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", put.text());
    assert!(put.text().contains("--max-upload-size"), "{}", put.text());
    assert_eq!(w.get(&big).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_are_recorded_for_the_least_recently_used_order() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let (a, b) = (
        store_path("a").hash().to_string(),
        store_path("b").hash().to_string(),
    );
    for hash in [&a, &b] {
        upstream.put(&format!("/{hash}.ls"), LISTING);
    }
    let key = upstream_key();
    let flags = ["--access-flush-interval", "100ms"];
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &flags).await;
    let client = client();
    let get = |hash: &String| send(client.get(proxy.url(&format!("/{hash}.ls"))));
    assert_eq!(get(&a).await.status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(get(&b).await.status, StatusCode::OK);
    // Stored in that order; a hit on `a` makes it the more recent once flushed.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(get(&a).await.header("x-cache-status"), Some("HIT"));
    let db = nixcache::db::connect(&proxy.sqlite_url()).await.unwrap();
    let order = || async {
        let now = nixcache::db::Timestamp::now() + std::time::Duration::from_secs(1);
        let rows = db.least_recent_side_files(now, None, 10).await.unwrap();
        rows.into_iter().map(|r| r.path).collect::<Vec<_>>()
    };
    let expected = vec![format!("{b}.ls"), format!("{a}.ls")];
    assert!(
        common::wait_until(std::time::Duration::from_secs(5), || async {
            order().await == expected
        })
        .await,
        "{:?}",
        order().await
    );
}
