//! The replica client against local HTTP servers, and which pods are asked.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::client::{get_status, PollError, PollResult, MAX_BODY_BYTES};
use super::poll::{targets, Target};
use crate::fixtures;
use crate::render::{self, Plan};
use crate::Config;

/// A stand-in replica (a mock: not `nixcache serve`) answering `/status` with `router`.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

const TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test]
async fn reads_a_status_and_ignores_fields_it_does_not_know() {
    let body = json!({"version": "9.9.9", "public_key": "k-1:abc=", "upstreams": [],
                      "cache": {"size_bytes": 7, "something_new": {"x": 1}}, "more": [1, 2]});
    let addr = serve(Router::new().route("/status", get(move || async move { body.to_string() }))).await;
    let report = get_status(addr, TIMEOUT).await.unwrap();
    assert_eq!(report.version.as_deref(), Some("9.9.9"));
    assert_eq!(report.cache.unwrap().size_bytes, Some(7));
}

#[tokio::test]
async fn failures_are_classified() {
    let big = "x".repeat(MAX_BODY_BYTES + 1);
    let router = Router::new().route(
        "/status",
        get(|| async { (StatusCode::UNAUTHORIZED, "credential needed") }),
    );
    let refused = serve(router).await;
    let garbage = serve(Router::new().route("/status", get(|| async { "<html>" }))).await;
    let huge = serve(Router::new().route("/status", get(move || async move { big }))).await;
    let slow = serve(Router::new().route(
        "/status",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "{}"
        }),
    ))
    .await;
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let result = |addr, timeout| async move { get_status(addr, timeout).await.unwrap_err() };
    let e = result(refused, TIMEOUT).await;
    assert!(matches!(e, PollError::Status(401)), "{e}");
    assert_eq!(e.result(), PollResult::HttpError);
    let e = result(garbage, TIMEOUT).await;
    assert!(matches!(e, PollError::Json(_)), "{e}");
    assert_eq!(e.result(), PollResult::Invalid);
    let e = result(huge, TIMEOUT).await;
    assert!(matches!(e, PollError::Body(_)), "{e}");
    assert_eq!(e.result(), PollResult::Invalid);
    let started = std::time::Instant::now();
    let e = result(slow, Duration::from_millis(200)).await;
    assert!(matches!(e, PollError::Timeout(_)), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(result(closed, TIMEOUT).await.result(), PollResult::Unreachable);
}

/// A pod of `nc`'s Deployment template, with this status.
fn pod(name: &str, created: &str, status: serde_json::Value) -> Pod {
    let nc = fixtures::scaled("demo");
    let plan = Plan::new(&nc, &Config::default(), "h".into(), None);
    let template = render::deployment(&nc, &plan).spec.unwrap().template;
    let mut pod = json!({
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
        "spec": template.spec,
        "status": status,
    });
    pod["metadata"]["labels"] = json!(template.metadata.unwrap().labels);
    serde_json::from_value(pod).unwrap()
}

fn ready(ip: &str, ready: bool) -> serde_json::Value {
    json!({"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]})
}

#[test]
fn only_ready_pods_with_an_ip_are_asked_on_the_proxy_port() {
    let mut deleting = pod("deleting", "2025-01-01T00:00:00Z", ready("10.0.0.4", true));
    deleting.metadata.deletion_timestamp = deleting.metadata.creation_timestamp.clone();
    let pods = [
        pod("a", "2025-01-01T00:00:00Z", ready("10.0.0.1", true)),
        pod("b", "2025-01-01T00:00:01Z", ready("10.0.0.2", false)),
        pod(
            "c",
            "2025-01-01T00:00:02Z",
            json!({"conditions": [{"type": "Ready", "status": "True"}]}),
        ),
        pod("d", "2025-01-01T00:00:03Z", ready("fd00::5", true)),
        deleting,
    ];
    assert_eq!(
        targets(&pods),
        [
            Target {
                pod: "a".into(),
                addr: "10.0.0.1:8501".parse().unwrap(),
                created_unix_ms: 1_735_689_600_000,
            },
            Target {
                pod: "d".into(),
                addr: "[fd00::5]:8501".parse().unwrap(),
                created_unix_ms: 1_735_689_603_000,
            },
        ]
    );
}

#[test]
fn the_controller_ignores_changes_of_status_cache_only() {
    use crate::controller::reconciled_fields;
    let mut nc = fixtures::scaled("demo");
    nc.status = Some(nixcache_crds::NixCacheStatus::default());
    let before = reconciled_fields(&nc);
    let mut polled = nc.clone();
    polled.status.as_mut().unwrap().cache = Some(nixcache_crds::CacheStatus {
        size: Some("1 KiB".into()),
        ..Default::default()
    });
    polled.metadata.resource_version = Some("42".into());
    polled.metadata.managed_fields = Some(vec![Default::default()]);
    assert_eq!(reconciled_fields(&polled), before);
    let mut scaled = polled.clone();
    scaled.spec.replicas += 1;
    assert_ne!(reconciled_fields(&scaled), before, "a spec change");
    let mut relabelled = polled.clone();
    relabelled.metadata.labels = Some([("a".to_owned(), "b".to_owned())].into());
    assert_ne!(reconciled_fields(&relabelled), before, "a label");
    let mut reconciled = polled;
    reconciled.status.as_mut().unwrap().ready_replicas = 3;
    assert_ne!(
        reconciled_fields(&reconciled),
        before,
        "the reconciler's own status"
    );
}
