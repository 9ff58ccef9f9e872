//! A prefetch tree is one span: what its lookups log (and export as traces) names the narinfo a
//! client asked for that set them off, not the client's request, which ended long before.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{client, get, sample_nar, upstream_key, wait_until, Entry, Logs, Proxy, Upstream};
use nixcache_protocol::{Compression, SigningKey};
use reqwest::StatusCode;

#[tokio::test]
async fn what_a_prefetch_logs_names_its_tree() {
    let logs = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let trusted = upstream_key();
    // `top` refers to `lib`, whose narinfo a key nobody trusts signed: looking it up ahead warns.
    let stranger = SigningKey::generate("stranger-1").unwrap();
    let lib = Entry::new("traced-lib", sample_nar(51, 4096), Compression::Xz, &stranger);
    let mut top = Entry::new("traced-top", sample_nar(52, 4096), Compression::Xz, &trusted);
    top.info.references = vec![lib.store_path.clone()];
    top.info.sigs.clear();
    top.info.add_signature(&trusted);
    upstream.add(&lib);
    upstream.add(&top);
    let extra = ["--prefetch", "narinfo"];
    let proxy = Proxy::start(dir.path(), &[&upstream], &[trusted.public_key()], &extra).await;

    let got = get(&client(), &proxy.url(&top.narinfo_path())).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let (root, looked_up) = (format!("root={}", top.hash()), format!("hash={}", lib.hash()));
    let parts = [
        "prefetch_tree{",
        &root,
        "prefetch_narinfo{",
        &looked_up,
        "not signed by any trusted key",
    ];
    let logged = wait_until(Duration::from_secs(10), || async {
        !logs.lines_with(&parts).is_empty()
    })
    .await;
    assert!(logged, "no line with {parts:?} in:\n{}", logs.text());
    // Its own trace: the client's request span is not around it.
    for line in logs.lines_with(&parts) {
        assert!(!line.contains("request{"), "{line}");
    }
    assert_eq!(upstream.gets(&lib.narinfo_path()), 1);
}
