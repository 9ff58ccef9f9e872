//! PUT and DELETE as `nix copy --to http://…` uses them: off by default (405), then only with a
//! credential (401), NARs checked against their name and their narinfo before they are visible,
//! nothing recorded ever overwritten.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    random_bytes,
    writable::{basic, start, upload_entry, PASSWORD, TOKEN, USER},
};
use nixcache_protocol::{NarInfo, PublicKey, Sha256Hash};
use reqwest::StatusCode;

#[tokio::test]
async fn writes_are_off_by_default() {
    let w = start(&[]).await;
    let entry = upload_entry("off");
    let auth = basic(USER, PASSWORD);
    for got in [
        w.put(&entry.narinfo_path(), entry.narinfo_text(), Some(&auth))
            .await,
        w.put(
            &format!("/nar/{}", entry.file_name()),
            entry.file.clone(),
            Some(&auth),
        )
        .await,
        w.delete(&entry.narinfo_path(), Some(&auth)).await,
    ] {
        assert_eq!(got.status, StatusCode::METHOD_NOT_ALLOWED, "{}", got.text());
        assert_eq!(got.header("allow"), Some("GET, HEAD"));
    }
    assert!(w.proxy.stored_files().is_empty());
}

#[tokio::test]
async fn uploads_need_a_credential_and_store_nothing_without() {
    let w = start(&["--allow-put"]).await;
    let entry = upload_entry("creds");
    let nar_path = format!("/nar/{}", entry.file_name());
    for auth in [
        None,
        Some(basic(USER, "wrong")),
        Some(basic("nobody", PASSWORD)),
        Some("Bearer nope".into()),
    ] {
        let got = w.put(&nar_path, entry.file.clone(), auth.as_deref()).await;
        assert_eq!(got.status, StatusCode::UNAUTHORIZED, "{auth:?}: {}", got.text());
        assert!(got
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic")));
    }
    assert!(w.proxy.stored_files().is_empty() && w.proxy.tmp_files().is_empty());
    // Refusals are counted under what was sent (a NAR), like every other upload result.
    let metrics = w.get("/metrics").await;
    let refused = "nixcache_uploads_total{kind=\"nar\",result=\"unauthorized\"} 4";
    assert!(metrics.text().contains(refused), "{}", metrics.text());
    // DELETE stays off when only PUT is on.
    let got = w
        .delete(&entry.narinfo_path(), Some(&basic(USER, PASSWORD)))
        .await;
    assert_eq!(got.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_nar_becomes_visible_with_a_narinfo_that_agrees() {
    let w = start(&["--allow-put", "--allow-delete"]).await;
    let auth = basic(USER, PASSWORD);
    let entry = upload_entry("hello");
    let nar_path = format!("/nar/{}", entry.file_name());

    // Bytes that are not what the name says are refused and leave nothing behind.
    let got = w.put(&nar_path, random_bytes(6, 1000), Some(&auth)).await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST, "{}", got.text());
    assert!(
        got.text().contains("decoding failed") || got.text().contains("not to its name"),
        "{}",
        got.text()
    );
    assert!(w.proxy.stored_files().is_empty() && w.proxy.tmp_files().is_empty());

    // A narinfo before its NAR is refused.
    let got = w
        .put(&entry.narinfo_path(), entry.narinfo_text(), Some(&auth))
        .await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST);
    assert!(
        got.text().contains("PUT the NAR before its narinfo"),
        "{}",
        got.text()
    );

    let got = w.put(&nar_path, entry.file.clone(), Some(&auth)).await;
    assert_eq!(got.status, StatusCode::CREATED, "{}", got.text());
    assert_eq!(
        w.get(&nar_path).await.status,
        StatusCode::NOT_FOUND,
        "invisible before its narinfo"
    );

    // A narinfo that lies about the NAR is refused; nothing becomes visible.
    let mut lying = entry.info.clone();
    lying.nar_hash = Sha256Hash::digest(b"another NAR");
    let got = w.put(&entry.narinfo_path(), lying.to_string(), Some(&auth)).await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST);
    assert!(
        got.text().contains("does not match its NAR: NarHash"),
        "{}",
        got.text()
    );
    assert_eq!(w.get(&entry.narinfo_path()).await.status, StatusCode::NOT_FOUND);
    assert_eq!(w.get(&nar_path).await.status, StatusCode::NOT_FOUND);

    // A narinfo for another store path than its URL says is refused.
    let other = upload_entry("other");
    let got = w
        .put(&other.narinfo_path(), entry.narinfo_text(), Some(&auth))
        .await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST);

    // The right one, with a token this time: visible, signed by the proxy, the bytes intact.
    let got = w
        .put(
            &entry.narinfo_path(),
            entry.narinfo_text(),
            Some(&format!("Bearer {TOKEN}")),
        )
        .await;
    assert_eq!(got.status, StatusCode::CREATED, "{}", got.text());
    let served = w.get(&entry.narinfo_path()).await.narinfo();
    let proxy_key = PublicKey::parse(w.get("/pubkey").await.text().trim()).unwrap();
    assert!(served.verify_any(&[proxy_key]), "{served}");
    assert_eq!(
        (served.nar_hash, served.url.as_str()),
        (entry.info.nar_hash, &nar_path[1..])
    );
    assert_eq!(w.get(&nar_path).await.body, entry.file);

    // Uploading again changes nothing; a different narinfo for the path is a conflict.
    let got = w
        .put(&entry.narinfo_path(), entry.narinfo_text(), Some(&auth))
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        w.put(&nar_path, entry.file.clone(), Some(&auth)).await.status,
        StatusCode::OK
    );
    let mut changed: NarInfo = entry.info.clone();
    changed.nar_hash = Sha256Hash::digest(b"rebuilt");
    let got = w
        .put(&entry.narinfo_path(), changed.to_string(), Some(&auth))
        .await;
    assert_eq!(got.status, StatusCode::CONFLICT, "{}", got.text());
    assert_eq!(
        w.get(&entry.narinfo_path()).await.narinfo().nar_hash,
        entry.info.nar_hash
    );

    // DELETE of a NAR a narinfo names is refused; of the narinfo, takes both.
    assert_eq!(
        w.delete(&nar_path, Some(&auth)).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        w.delete(&entry.narinfo_path(), None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        w.delete(&entry.narinfo_path(), Some(&auth)).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(w.get(&entry.narinfo_path()).await.status, StatusCode::NOT_FOUND);
    assert_eq!(w.get(&nar_path).await.status, StatusCode::NOT_FOUND);
    assert!(w.proxy.stored_files().is_empty(), "{:?}", w.proxy.stored_files());
    assert_eq!(
        w.delete(&entry.narinfo_path(), Some(&auth)).await.status,
        StatusCode::NOT_FOUND
    );

    let metrics = w.get("/metrics").await;
    for line in [
        "nixcache_uploads_total{kind=\"nar\",result=\"stored\"} 1",
        "nixcache_uploads_total{kind=\"narinfo\",result=\"stored\"} 1",
        "nixcache_uploads_total{kind=\"narinfo\",result=\"deleted\"} 1",
    ] {
        assert!(
            metrics.text().contains(line),
            "no {line:?} in\n{}",
            metrics.text()
        );
    }
}

#[tokio::test]
async fn start_refuses_writes_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let argv = ["nixcache", "serve", "--allow-put", "--data-dir"];
    let data = dir.path().display().to_string();
    let cli =
        <nixcache::cli::Cli as clap::Parser>::try_parse_from(argv.iter().copied().chain([data.as_str()]))
            .unwrap();
    let nixcache::cli::Command::Serve(args) = cli.command else {
        unreachable!()
    };
    let err = nixcache::app::build_state(&args).await.err().unwrap().to_string();
    assert!(err.contains("--upload-credentials-file"), "{err}");
}
