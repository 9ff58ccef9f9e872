//! The status poller against the scripted API server (`common::FakeApi`) and stand-in replicas:
//! it asks every ready pod directly, writes only `status.cache` under its own field manager,
//! and the reconciler neither drops it nor rewrites the status because of it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::world::{World, NC, NS};
use nixcache_operator::cache_status::{poll::STATUS_MANAGER, Options, Poller};
use nixcache_operator::controller::Scope;
use nixcache_operator::fixtures;
use serde_json::{json, Value};

/// A mock replica (not `nixcache serve`): answers `GET /status` with `hits` and `misses` in the
/// last hour, in the format of the proxy's `/status`.
async fn replica(hits: u64, misses: u64) -> SocketAddr {
    let body = json!({
        "version": "0.2.0", "public_key": "demo-1:abc=", "ready": true,
        "upstreams": [{"url": "https://cache.nixos.org", "priority": 40, "state": "up",
                       "since_unix_ms": 1_764_900_000_000u64, "probe_latency_ms": 12.5,
                       "probed_unix_ms": 1_764_900_000_000u64, "hits": 1, "misses": 0,
                       "errors": 0, "last_error": null}],
        "cache": {"narinfos": 120, "nars": 118, "size_bytes": 1_288_490_189i64,
                  "max_size_bytes": 10_737_418_240i64,
                  "last_hour": {"hits": hits, "misses": misses, "served_bytes": 900, "fetched_bytes": 400}},
        "upkeep": {"gc": null, "fsck": null}
    })
    .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route("/status", get(move || async move { body }));
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A pod of `demo` at `addr` (its IP and the `http` port of the `nixcache` container).
fn pod(name: &str, addr: SocketAddr, ready: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": "2025-01-01T00:00:00Z",
                     "labels": {"app.kubernetes.io/name": "nixcache", "app.kubernetes.io/instance": "demo",
                                "app.kubernetes.io/component": "proxy"}},
        "spec": {"containers": [{"name": "nixcache", "image": "x",
                                 "ports": [{"name": "http", "containerPort": addr.port()}]}]},
        "status": {"podIP": addr.ip().to_string(),
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    })
}

fn poller(w: &World) -> Poller {
    let options = Options {
        timeout: Duration::from_millis(500),
        ..Options::every(Duration::from_secs(60))
    };
    Poller::new(w.ctx.clone(), Scope::Namespace("default".into()), options)
}

fn cache(w: &World) -> Value {
    w.api.get(&format!("{NC}/demo")).unwrap()["status"]["cache"].clone()
}

#[tokio::test]
async fn the_poller_writes_status_cache_and_the_reconciler_leaves_it() {
    let w = World::new(&fixtures::scaled("demo"));
    w.create_ready(3).await;
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    for (name, addr, ready) in [
        ("demo-a", replica(8, 2).await, true),
        ("demo-b", replica(10, 0).await, true),
        ("demo-c", closed, true),
        ("demo-d", replica(1000, 0).await, false),
    ] {
        w.api.insert(&format!("{NS}/pods/{name}"), pod(name, addr, ready));
    }
    w.api.take_log();
    poller(&w).round().await;

    let log = w.api.take_log();
    let patches: Vec<_> = log.iter().filter(|r| r.method == "PATCH").collect();
    assert_eq!(
        patches.len(),
        1,
        "{:?}",
        log.iter().map(|r| r.line()).collect::<Vec<_>>()
    );
    let patch = patches[0];
    assert_eq!(patch.line(), format!("PATCH {NC}/demo/status"));
    assert!(patch.is_apply() && patch.forced());
    assert_eq!(patch.field_manager().as_deref(), Some(STATUS_MANAGER));
    let body = patch.body.clone().unwrap();
    let status_keys: Vec<&String> = body["status"].as_object().unwrap().keys().collect();
    assert_eq!(status_keys, ["cache"], "only status.cache: {body}");

    let c = cache(&w);
    assert_eq!(
        (c["replicasPolled"].clone(), c["replicasAnswered"].clone()),
        (json!(3), json!(2))
    );
    assert_eq!(c["size"], "1.2 GiB / 10 GiB");
    assert_eq!(
        c["hitRatioLastHour"], "90%",
        "18 of 20 over the two ready replicas"
    );
    assert_eq!(c["upstreamHealth"], "1/1 up");
    assert_eq!(c["upstreams"][0]["latencyMs"], 13);
    let metrics = w.ctx.metrics.encode();
    for line in [
        "nixcache_operator_status_polls_total{result=\"ok\"} 2",
        "nixcache_operator_status_polls_total{result=\"unreachable\"} 1",
        // create_ready(3) made all three the scaled fixture asks for ready.
        "nixcache_operator_replicas{namespace=\"default\",nixcache=\"demo\",state=\"ready\"} 3",
        "nixcache_operator_replicas{namespace=\"default\",nixcache=\"demo\",state=\"desired\"} 3",
        "nixcache_operator_gc_scheduled{namespace=\"default\",nixcache=\"demo\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    // The reconciler's status apply keeps it, and does not rewrite the status because of it.
    let status_before = w.api.get(&format!("{NC}/demo")).unwrap()["status"].clone();
    let log = w.reconcile().await;
    let rewrite = log.iter().find(|r| r.line() == format!("PATCH {NC}/demo/status"));
    assert!(
        rewrite.is_none(),
        "nothing of the reconciler's changed: {:?} over {status_before}",
        rewrite.and_then(|r| r.body.clone())
    );
    assert_eq!(w.api.get(&format!("{NC}/demo")).unwrap()["status"], status_before);
    let conf = status_before["nixConf"].as_str().unwrap();
    assert!(
        conf.starts_with(
            "substituters = http://demo.default.svc:8501\ntrusted-public-keys = demo.default-1:"
        ),
        "{conf}"
    );
    // A status change of the reconciler's own keeps status.cache too.
    w.deployment_ready(2);
    w.reconcile().await;
    assert_eq!(w.current().status.unwrap().ready_replicas, 2);
    assert_eq!(cache(&w), c);
}

#[tokio::test]
async fn nothing_is_written_when_no_replica_answers_or_the_cache_is_private() {
    let w = World::new(&fixtures::scaled("demo"));
    w.create_ready(1).await;
    w.api.insert(
        &format!("{NS}/pods/demo-a"),
        pod("demo-a", replica(1, 1).await, true),
    );
    poller(&w).round().await;
    let written = cache(&w);
    assert_eq!(written["replicasAnswered"], 1);

    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    w.api
        .insert(&format!("{NS}/pods/demo-a"), pod("demo-a", closed, true));
    w.api.take_log();
    poller(&w).round().await;
    let log = w.api.take_log();
    assert!(!log.iter().any(|r| r.method == "PATCH"), "no answer, no write");
    assert_eq!(cache(&w), written, "the last figures stand");

    w.edit(|nc| nc["spec"]["private"] = json!({"credentialsSecretRef": {"name": "readers"}}));
    poller(&w).round().await;
    let log = w.api.take_log();
    assert!(
        !log.iter().any(|r| r.path.ends_with("/pods")),
        "a private cache's replicas are not asked: {:?}",
        log.iter().map(|r| r.line()).collect::<Vec<_>>()
    );
}
