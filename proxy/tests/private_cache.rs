//! A private cache (`--read-credentials-file`), as a Nix client with a netrc meets it: every
//! cache endpoint answers 401 with `WWW-Authenticate` before anything is looked up, a read or an
//! upload credential passes, a read one cannot write (403), and what probes and scrapers ask
//! for stays open. An HTTP warm-up still walks its closure through the gate. And an uploaded NAR
//! that was evicted answers 410 Gone, not a 502.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use clap::Parser;
use common::{
    sample_nar,
    writable::{basic, start, upload_entry, Writable, PASSWORD, TOKEN, USER},
    Entry,
};
use nixcache::cli::{Cli, Command};
use nixcache_protocol::Compression;
use reqwest::StatusCode;

const READER: &str = "reader";
const READER_PASSWORD: &str = "read only please";
const READ_TOKEN: &str = "read-token-5f0e2b7c9d";

/// A proxy with uploads and warm-ups on, private with a reader and a read token.
async fn private(extra: &[&str]) -> (Writable, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("readers");
    let hash = bcrypt::hash(READER_PASSWORD, 4).unwrap();
    std::fs::write(&file, format!("# readers\n{READER}:{hash}\n{READ_TOKEN}\n")).unwrap();
    let file = file.display().to_string();
    let mut flags = vec!["--read-credentials-file", file.as_str()];
    flags.extend(extra);
    (start(&flags).await, dir)
}

/// An upstream path, signed with the upstream's key.
fn upstream_entry(w: &Writable, name: &str, seed: u64) -> Entry {
    let entry = Entry::new(
        name,
        sample_nar(seed, 100 << 10),
        Compression::Xz,
        &w.upstream_key,
    );
    w.upstream.add(&entry);
    entry
}

/// What `nix copy --to` uploads for `entry`: its NAR, then its narinfo; both stored.
async fn upload(w: &Writable, entry: &Entry, auth: &str) {
    let nar = format!("/nar/{}", entry.file_name());
    let got = w.put(&nar, entry.file.clone(), Some(auth)).await;
    assert_eq!(got.status, StatusCode::CREATED, "{}", got.text());
    let got = w
        .put(&entry.narinfo_path(), entry.narinfo_text(), Some(auth))
        .await;
    assert_eq!(got.status, StatusCode::CREATED, "{}", got.text());
}

#[tokio::test]
async fn reads_need_a_credential_checked_before_any_lookup() {
    // Uploads on: an uploader's credential reads too.
    let (w, _dir) = private(&["--allow-put"]).await;
    let entry = upstream_entry(&w, "private-hello", 71);
    let nar = format!("/nar/{}", entry.file_name());
    let paths = [
        "/nix-cache-info",
        "/",
        "/pubkey",
        "/status",
        &entry.narinfo_path(),
        &nar,
    ];
    let wrong = [
        None,
        Some(basic(READER, "wrong")),
        Some(basic("nobody", READER_PASSWORD)),
        Some("Bearer not-a-token-at-all".to_owned()),
    ];
    for path in paths.iter().chain(&["/nothing-here", "/_nixcache/warm"]) {
        for auth in &wrong {
            let mut request = w.client.get(w.proxy.url(path));
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let got = common::send(request).await;
            assert_eq!(
                got.status,
                StatusCode::UNAUTHORIZED,
                "{path} {auth:?}: {}",
                got.text()
            );
            assert_eq!(
                got.header("www-authenticate"),
                Some("Basic realm=\"nixcache\", charset=\"UTF-8\""),
                "{path}"
            );
        }
        let head = common::send(w.client.head(w.proxy.url(path))).await;
        assert_eq!(head.status, StatusCode::UNAUTHORIZED, "HEAD {path}");
    }
    assert_eq!(w.upstream.object_gets(), 0, "nothing was asked of the upstream");
    // The internal endpoint asks for the replicas' own token, which no client credential is.
    let fill = format!("/_nixcache/fills/{}", entry.file_name());
    for auth in [None, Some(basic(READER, READER_PASSWORD))] {
        let mut request = w.client.get(w.proxy.url(&fill));
        if let Some(auth) = &auth {
            request = request.header("authorization", auth);
        }
        let got = common::send(request).await;
        assert_eq!(got.status, StatusCode::UNAUTHORIZED, "{auth:?}: {}", got.text());
        assert!(got.text().contains("replicas"), "{}", got.text());
    }
    // Probes and scrapers need none.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(w.get(path).await.status, StatusCode::OK, "{path}");
    }
    // A reader's password, a read token and an uploader's credential all read.
    let readers = [
        basic(READER, READER_PASSWORD),
        format!("Bearer {READ_TOKEN}"),
        basic(USER, PASSWORD),
    ];
    for auth in &readers {
        let info = w.get_with("/nix-cache-info", auth).await;
        assert_eq!(info.status, StatusCode::OK, "{auth}: {}", info.text());
        assert!(info.text().contains("StoreDir: /nix/store"));
        let got = w.get_with(&entry.narinfo_path(), auth).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.text());
        let got = w.get_with(&nar, auth).await;
        assert_eq!((got.status, got.body == entry.file), (StatusCode::OK, true));
    }
    let metrics = w.get("/metrics").await;
    assert!(
        metrics
            .text()
            .lines()
            .any(|l| l.starts_with("nixcache_http_requests_total") && l.contains("status=\"401\"")),
        "refusals are counted"
    );
}

#[tokio::test]
async fn a_read_credential_cannot_write() {
    let (w, _dir) = private(&["--allow-put"]).await;
    let entry = upload_entry("private-upload");
    let nar = format!("/nar/{}", entry.file_name());
    let reader = basic(READER, READER_PASSWORD);
    for auth in [reader.as_str(), &format!("Bearer {READ_TOKEN}")] {
        let got = w.put(&nar, entry.file.clone(), Some(auth)).await;
        assert_eq!(got.status, StatusCode::FORBIDDEN, "{}", got.text());
        assert!(got.text().contains("may read, not write"), "{}", got.text());
    }
    assert!(w.proxy.stored_files().is_empty() && w.proxy.tmp_files().is_empty());
    let got = w.put(&nar, entry.file.clone(), None).await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    let writer = format!("Bearer {TOKEN}");
    upload(&w, &entry, &writer).await;
    // What was uploaded, a reader reads.
    let got = w.get_with(&nar, &reader).await;
    assert_eq!((got.status, got.body == entry.file), (StatusCode::OK, true));
}

#[tokio::test]
async fn an_http_warm_up_walks_a_private_cache() {
    let (w, _dir) = private(&["--allow-warm"]).await;
    let mut lib = Entry::new(
        "private-lib",
        sample_nar(72, 50 << 10),
        Compression::Xz,
        &w.upstream_key,
    );
    let mut top = Entry::new(
        "private-top",
        sample_nar(73, 60 << 10),
        Compression::Xz,
        &w.upstream_key,
    );
    lib.info.references = vec![];
    top.info.references = vec![lib.store_path.clone()];
    for entry in [&mut lib, &mut top] {
        entry.info.sigs.clear();
        entry.info.add_signature(&w.upstream_key);
        w.upstream.add(entry);
    }
    let auth = basic(USER, PASSWORD);
    let body = format!("{}\n", top.store_path.to_absolute());
    let got = w
        .post(
            "/_nixcache/warm",
            body.clone(),
            Some(&basic(READER, READER_PASSWORD)),
        )
        .await;
    assert_eq!(
        got.status,
        StatusCode::FORBIDDEN,
        "a reader cannot start one: {}",
        got.text()
    );
    let got = w.post("/_nixcache/warm", body, Some(&auth)).await;
    assert_eq!(got.status, StatusCode::ACCEPTED, "{}", got.text());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let state = loop {
        let got = w.get_with("/_nixcache/warm", &auth).await;
        let state: serde_json::Value = serde_json::from_str(got.text()).unwrap();
        if state["state"] != "running" {
            break state;
        }
        assert!(tokio::time::Instant::now() < deadline, "{state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (&state["complete"], &state["nars"]),
        (&true.into(), &2.into()),
        "{state}"
    );
    assert_eq!(w.proxy.stored_files().len(), 2);
}

#[tokio::test]
async fn an_evicted_uploaded_nar_is_gone_not_a_gateway_error() {
    let w = start(&["--allow-put", "--memory-cache-ttl", "0s"]).await;
    let entry = upload_entry("evicted-upload");
    let nar = format!("/nar/{}", entry.file_name());
    let auth = format!("Bearer {TOKEN}");
    upload(&w, &entry, &auth).await;
    assert_eq!(w.get(&nar).await.status, StatusCode::OK);

    let data_dir = w.proxy.data_dir.display().to_string();
    let url = w.proxy.sqlite_url();
    let argv = [
        "nixcache",
        "gc",
        "--data-dir",
        &data_dir,
        "--database-url",
        &url,
        "--max-size",
        "0",
        "--gc-keep-recent",
        "0s",
    ];
    let Command::Gc(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    let report = nixcache::app::collect_garbage(&args).await.unwrap();
    assert_eq!((report.narinfos_evicted, report.nars_deleted), (1, 1), "{report}");
    assert_eq!(report.narinfos_purged, 0, "kept for --gc-keep-evicted: {report}");

    // A client that cached the narinfo asks for the NAR: it exists nowhere else.
    for request in [w.client.get(w.proxy.url(&nar)), w.client.head(w.proxy.url(&nar))] {
        let got = common::send(request).await;
        assert_eq!(got.status, StatusCode::GONE, "{}", got.text());
    }
    assert!(w.get(&nar).await.text().contains("upload the path again"));
    assert_eq!(w.upstream.object_gets(), 0, "never asked of an upstream");
    assert_eq!(w.get(&entry.narinfo_path()).await.status, StatusCode::NOT_FOUND);
    // Which is what `nix copy --to` then does: the path is back, whole.
    upload(&w, &entry, &auth).await;
    let got = w.get(&nar).await;
    assert_eq!((got.status, got.body == entry.file), (StatusCode::OK, true));
    assert_eq!(w.get(&entry.narinfo_path()).await.status, StatusCode::OK);
}
