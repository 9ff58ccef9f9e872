//! `POST /_nixcache/warm` as a pipeline uses it after a nixpkgs bump: off unless `--allow-warm`
//! (404), then only with an upload credential (401), the body checked whole (400) before anything
//! starts, one run at a time (409), and `GET` telling how the run went. A run fetches whole
//! closures into the cache, as `nixcache warm` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{
    sample_nar,
    writable::{basic, start, Writable, PASSWORD, TOKEN, USER},
    Entry, Fault,
};
use nixcache_protocol::Compression;
use reqwest::StatusCode;

const ROUTE: &str = "/_nixcache/warm";

/// `top` → `lib`, and `lib` referring to itself: a closure of two paths, both at the upstream.
fn closure(w: &Writable) -> (Entry, Entry) {
    let key = &w.upstream_key;
    let mut lib = Entry::new("warm-lib", sample_nar(41, 200 << 10), Compression::Xz, key);
    let mut top = Entry::new("warm-top", sample_nar(42, 300 << 10), Compression::Xz, key);
    lib.info.references = vec![lib.store_path.clone()];
    top.info.references = vec![lib.store_path.clone(), top.store_path.clone()];
    for entry in [&mut lib, &mut top] {
        entry.info.sigs.clear();
        entry.info.add_signature(key);
        w.upstream.add(entry);
    }
    (top, lib)
}

/// The JSON state, once it is no longer running.
async fn finished_state(w: &Writable, auth: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = w.get_with(ROUTE, auth).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.text());
        let state: serde_json::Value = serde_json::from_str(got.text()).unwrap();
        if state["state"] != "running" {
            return state;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still running after 30 s: {state}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn warm_ups_are_off_by_default() {
    let w = start(&["--allow-put"]).await;
    let auth = basic(USER, PASSWORD);
    let got = w.post(ROUTE, "/nix/store/x", Some(&auth)).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND, "{}", got.text());
    let large = w.post(ROUTE, vec![b' '; 3 << 20], None).await;
    assert_eq!(large.status, StatusCode::NOT_FOUND, "{}", large.text());
    assert!(got.text().contains("--allow-warm"), "{}", got.text());
    assert_eq!(w.get_with(ROUTE, &auth).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_warm_up_needs_a_credential_and_a_valid_body() {
    let w = start(&["--allow-warm"]).await;
    let (top, _) = closure(&w);
    let body = format!("{}\n", top.store_path.to_absolute());
    for auth in [None, Some(basic(USER, "wrong")), Some("Bearer nope".into())] {
        let got = w.post(ROUTE, body.clone(), auth.as_deref()).await;
        assert_eq!(got.status, StatusCode::UNAUTHORIZED, "{auth:?}: {}", got.text());
        assert!(got.header("www-authenticate").is_some());
    }
    assert_eq!(w.get(ROUTE).await.status, StatusCode::UNAUTHORIZED);
    // The credential comes first: a large body or a bad query without one is a 401 all the same.
    let large = vec![b' '; 3 << 20];
    assert_eq!(
        w.post(ROUTE, large.clone(), None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let typo = format!("{ROUTE}?narinfo-only");
    assert_eq!(
        w.post(&typo, body.clone(), None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let bearer = format!("Bearer {TOKEN}");
    for (bad, says) in [
        (" \n".to_owned(), "no store paths"),
        (format!("{body}/nix/store/not-a-path\n"), "not-a-path"),
        (
            format!("{body}/gnu/store/7h7qgvs4kgzsn8a6rb274saxyqh4jxlz-hello"),
            "/gnu/store",
        ),
    ] {
        let got = w.post(ROUTE, bad.clone(), Some(&bearer)).await;
        assert_eq!(got.status, StatusCode::BAD_REQUEST, "{bad:?}: {}", got.text());
        assert!(got.text().contains(says), "{bad:?}: {}", got.text());
    }
    let got = w.post(ROUTE, large, Some(&bearer)).await;
    assert_eq!(got.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", got.text());
    let got = w.post(&typo, body.clone(), Some(&bearer)).await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST, "{}", got.text());
    assert!(got.text().contains("narinfo-only"), "{}", got.text());
    // Nothing started, nothing asked of the upstream.
    let state = finished_state(&w, &bearer).await;
    assert_eq!(state["state"], "idle", "{state}");
    assert_eq!(w.upstream.object_gets(), 0);
    assert!(w.proxy.stored_files().is_empty());
}

#[tokio::test]
async fn a_warm_up_fetches_whole_closures_and_tells_how_it_went() {
    let w = start(&["--allow-warm"]).await;
    let (top, lib) = closure(&w);
    let auth = basic(USER, PASSWORD);
    let got = w
        .post(ROUTE, format!("{}\n", top.store_path.to_absolute()), Some(&auth))
        .await;
    assert_eq!(got.status, StatusCode::ACCEPTED, "{}", got.text());
    assert_eq!(got.header("location"), Some(ROUTE));
    let running: serde_json::Value = serde_json::from_str(got.text()).unwrap();
    assert_eq!(
        (&running["state"], &running["asked"]),
        (&"running".into(), &1.into())
    );

    let state = finished_state(&w, &auth).await;
    assert_eq!(state["state"], "done", "{state}");
    assert_eq!(state["complete"], true, "{state}");
    assert_eq!(
        (&state["paths"], &state["nars"]),
        (&2.into(), &2.into()),
        "{state}"
    );
    let bytes = (top.file.len() + lib.file.len()) as u64;
    assert_eq!(state["nar_bytes"], bytes, "{state}");
    assert!(
        state["finished"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{state}"
    );
    for entry in [&top, &lib] {
        w.proxy.wait_stored(&entry.file_name()).await;
        assert_eq!(w.upstream.gets(&entry.upstream_nar_path()), 1);
    }
}

#[tokio::test]
async fn one_warm_up_at_a_time_and_narinfos_only_leaves_the_nars() {
    let w = start(&["--allow-warm"]).await;
    let (top, lib) = closure(&w);
    let auth = basic(USER, PASSWORD);
    // A NAR that trickles in keeps the first run going while the second is asked for.
    let slow = Fault::Throttle {
        chunk: 4 << 10,
        every: Duration::from_millis(20),
    };
    w.upstream.set_fault(&lib.upstream_nar_path(), Some(slow));
    let got = w.post(ROUTE, lib.store_path.to_absolute(), Some(&auth)).await;
    assert_eq!(got.status, StatusCode::ACCEPTED, "{}", got.text());
    let again = w.post(ROUTE, top.store_path.to_absolute(), Some(&auth)).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text());
    assert!(again.text().contains("running"), "{}", again.text());
    assert_eq!(finished_state(&w, &auth).await["complete"], true);

    let got = w
        .post(
            &format!("{ROUTE}?narinfos-only"),
            top.store_path.to_absolute(),
            Some(&auth),
        )
        .await;
    assert_eq!(got.status, StatusCode::ACCEPTED, "{}", got.text());
    let state = finished_state(&w, &auth).await;
    assert_eq!(
        (&state["narinfos_only"], &state["complete"]),
        (&true.into(), &true.into()),
        "{state}"
    );
    assert_eq!(w.upstream.gets(&top.narinfo_path()), 1, "{state}");
    assert_eq!(w.upstream.gets(&top.upstream_nar_path()), 0, "{state}");
}
