//! Whose walk a request joins: behind a trusted reverse proxy (`--trusted-proxies`) each client
//! its `X-Forwarded-For` names walks apart; from anywhere else the connection's peer is the
//! client, whatever the header says. And a narinfo served from memory joins its client's walk
//! like any other, so a client substituting what another only looked at still gets its NARs
//! prefetched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{client, sample_nar, send, upstream_key, wait_until, Entry, Proxy, Upstream};
use nixcache_protocol::{Compression, SigningKey};
use reqwest::StatusCode;

/// `top` refers to `mid`, which refers to `lib`: the closure of `top`.
struct Chain {
    upstream: Upstream,
    key: SigningKey,
    lib: Entry,
    mid: Entry,
    top: Entry,
}

impl Chain {
    async fn start() -> Self {
        let (upstream, key) = (Upstream::start(10).await, upstream_key());
        let lib = Entry::new("walk-lib", sample_nar(61, 64 << 10), Compression::Xz, &key);
        let mut mid = Entry::new("walk-mid", sample_nar(62, 64 << 10), Compression::Xz, &key);
        mid.info.references = vec![lib.store_path.clone()];
        let mut top = Entry::new("walk-top", sample_nar(63, 64 << 10), Compression::Xz, &key);
        top.info.references = vec![mid.store_path.clone()];
        for entry in [&mut mid, &mut top] {
            entry.info.sigs.clear();
            entry.info.add_signature(&key);
        }
        for entry in [&lib, &mid, &top] {
            upstream.add(entry);
        }
        Self {
            upstream,
            key,
            lib,
            mid,
            top,
        }
    }

    async fn proxy(&self, dir: &std::path::Path, extra: &[&str]) -> Proxy {
        let mut args = vec!["--prefetch", "nar"];
        args.extend_from_slice(extra);
        Proxy::start(dir, &[&self.upstream], &[self.key.public_key()], &args).await
    }
}

/// GETs `path` as the client `forwarded_for` names (through a reverse proxy that says so).
async fn get_as(proxy: &Proxy, path: &str, forwarded_for: &str) {
    let request = client()
        .get(proxy.url(path))
        .header("x-forwarded-for", forwarded_for);
    let got = send(request).await;
    assert_eq!(got.status, StatusCode::OK, "{path}: {}", got.text());
}

/// Whether the upstream was asked for `entry`'s NAR within a while.
async fn nar_fetched(upstream: &Upstream, entry: &Entry) -> bool {
    let path = entry.upstream_nar_path();
    wait_until(Duration::from_secs(3), || async { upstream.gets(&path) > 0 }).await
}

#[tokio::test]
async fn a_trusted_proxys_clients_walk_apart_and_memory_hits_join_their_walk() {
    let chain = Chain::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = chain.proxy(dir.path(), &["--trusted-proxies", "127.0.0.1"]).await;
    // One client only looks at the closure (`nix path-info -r`): no NAR.
    for entry in [&chain.top, &chain.mid, &chain.lib] {
        get_as(&proxy, &entry.narinfo_path(), "198.51.100.1").await;
    }
    // Another takes just `lib` (its narinfo now from memory): its walk is `lib` alone.
    get_as(&proxy, &chain.lib.narinfo_path(), "198.51.100.2").await;
    get_as(&proxy, &format!("/nar/{}", chain.lib.file_name()), "198.51.100.2").await;
    assert!(
        !nar_fetched(&chain.upstream, &chain.mid).await,
        "the looker's walk was downloaded"
    );
    // A third substitutes the closure, every narinfo from memory: the rest is prefetched.
    for entry in [&chain.top, &chain.mid, &chain.lib] {
        get_as(&proxy, &entry.narinfo_path(), "198.51.100.3").await;
    }
    get_as(&proxy, &format!("/nar/{}", chain.lib.file_name()), "198.51.100.3").await;
    assert!(
        nar_fetched(&chain.upstream, &chain.mid).await,
        "no prefetch of mid's NAR"
    );
    assert!(
        nar_fetched(&chain.upstream, &chain.top).await,
        "no prefetch of top's NAR"
    );
    assert_eq!(chain.upstream.gets(&chain.lib.narinfo_path()), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn an_untrusted_peers_forwarded_for_is_ignored() {
    let chain = Chain::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The peer (127.0.0.1) is not among the trusted: both "clients" are that one peer, so the
    // second one's NAR request sets the looker's walk downloading.
    let proxy = chain
        .proxy(dir.path(), &["--trusted-proxies", "10.0.0.0/8"])
        .await;
    for entry in [&chain.top, &chain.mid, &chain.lib] {
        get_as(&proxy, &entry.narinfo_path(), "198.51.100.1").await;
    }
    get_as(&proxy, &format!("/nar/{}", chain.lib.file_name()), "198.51.100.2").await;
    assert!(
        nar_fetched(&chain.upstream, &chain.mid).await,
        "walks were split by a forged header"
    );
    assert!(nar_fetched(&chain.upstream, &chain.top).await);
    proxy.stop().await;
}
