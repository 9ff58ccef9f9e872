//! The HTTP edge: request path validation, methods, content types, unknown objects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, get, raw_request, sample_nar, send, upstream_key, Entry, Proxy, Upstream};
use nixcache_protocol::Compression;
use reqwest::StatusCode;

struct Setup {
    _dir: tempfile::TempDir,
    upstream: Upstream,
    proxy: Proxy,
    entry: Entry,
}

async fn setup(extra: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let entry = Entry::new("edge", sample_nar(51, 1_000), Compression::Xz, &key);
    upstream.add(&entry);
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], extra).await;
    Setup {
        _dir: dir,
        upstream,
        proxy,
        entry,
    }
}

/// `hash` with its first character replaced by `c`.
fn with_first(hash: &str, c: char) -> String {
    format!("{c}{}", &hash[1..])
}

fn bad_narinfo_paths(hash: &str) -> Vec<String> {
    let mut paths = vec![
        "/abc.narinfo".to_owned(),
        format!("/{hash}0.narinfo"),
        format!("/{}.narinfo", &hash[..31]),
        format!("/{}.narinfo", hash.to_uppercase()),
        "/%2e%2e%2f%2e%2e%2fetc%2fpasswd.narinfo".to_owned(),
        format!("/%2e%2e%2f{hash}.narinfo"),
        format!("/..%2f{hash}.narinfo"),
    ];
    // Not in Nix's base-32 alphabet.
    paths.extend(['e', 'o', 't', 'u'].map(|c| format!("/{}.narinfo", with_first(hash, c))));
    paths
}

fn bad_nar_paths(file_name: &str) -> Vec<String> {
    let (hash, ext) = file_name.split_at(52);
    vec![
        format!("/nar/{}{ext}", &hash[..51]),
        format!("/nar/{hash}0{ext}"),
        format!("/nar/{hash}.nar.gz"),
        format!("/nar/{hash}.narinfo"),
        format!("/nar/{}{ext}", with_first(hash, 'e')),
        format!("/nar/{}{ext}", hash.to_uppercase()),
        "/nar/../x".to_owned(),
        format!("/nar/../{hash}{ext}"),
        "/nar/%2e%2e%2fx".to_owned(),
        "/nar/a/b".to_owned(),
        format!("/nar/{file_name}/x"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_names_are_400_with_one_line_and_never_reach_the_upstream() {
    let s = setup(&[]).await;
    let mut paths = bad_narinfo_paths(&s.entry.hash());
    paths.extend(bad_nar_paths(&s.entry.file_name()));
    for path in &paths {
        let got = raw_request(s.proxy.addr, "GET", path).await;
        let body = String::from_utf8_lossy(&got.body);
        assert_eq!(got.status, 400, "{path}: {}\n{body}", got.head);
        let text = got.head.to_ascii_lowercase().contains("content-type: text/plain");
        assert!(text, "{path}: not text/plain: {}", got.head);
        let line = body
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("{path}: {body:?}"));
        assert!(
            !line.is_empty() && !line.contains('\n'),
            "{path}: not one line: {body:?}"
        );
    }
    assert_eq!(
        s.upstream.object_gets(),
        0,
        "a malformed request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_404() {
    let s = setup(&[]).await;
    // `/` is the landing page (tests/landing.rs).
    for path in ["/foo", "/foo/bar", "/robots.txt", "/nix-cache-info/x"] {
        let got = raw_request(s.proxy.addr, "GET", path).await;
        assert_eq!(got.status, 404, "{path}: {}", String::from_utf8_lossy(&got.body));
    }
    assert_eq!(s.upstream.object_gets(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_405() {
    let s = setup(&[]).await;
    let client = client();
    let nar = format!("/nar/{}", s.entry.file_name());
    for path in [s.entry.narinfo_path(), nar] {
        for method in [reqwest::Method::PUT, reqwest::Method::DELETE] {
            let got = send(client.request(method.clone(), s.proxy.url(&path)).body("x")).await;
            assert_eq!(got.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        }
    }
    assert_eq!(s.upstream.object_gets(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_info_and_content_types() {
    let s = setup(&["--priority", "41"]).await;
    let client = client();
    let info = get(&client, &s.proxy.url("/nix-cache-info")).await;
    assert_eq!(info.status, StatusCode::OK);
    assert_eq!(info.header("content-type"), Some("text/x-nix-cache-info"));
    assert_eq!(
        info.text(),
        "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 41\n"
    );

    let narinfo = get(&client, &s.proxy.url(&s.entry.narinfo_path())).await;
    assert_eq!(narinfo.status, StatusCode::OK);
    assert_eq!(narinfo.header("content-type"), Some("text/x-nix-narinfo"));

    // Probes: alive, and ready (database and storage answer).
    let health = get(&client, &s.proxy.url("/healthz")).await;
    assert_eq!((health.status, health.text()), (StatusCode::OK, "ok\n"));
    let ready = get(&client, &s.proxy.url("/readyz")).await;
    assert_eq!((ready.status, ready.text()), (StatusCode::OK, "ready\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nar_unknown_to_the_metadata_is_404_without_asking_the_upstream() {
    let s = setup(&[]).await;
    // A valid name the upstream even serves, but no narinfo the proxy knows points at it.
    let got = get(&client(), &s.proxy.url(&format!("/nar/{}", s.entry.file_name()))).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND, "{}", got.text());
    assert_eq!(s.upstream.object_gets(), 0);
    assert!(s.proxy.stored_files().is_empty());
}
