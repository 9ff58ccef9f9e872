//! The operator process against the scripted API server, on tokio's paused (virtual) clock:
//! watches that fail one at a time, a cluster lacking the newer APIs, metadata-only Secret
//! watches, and readiness. Leader election is in `leader.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{context, demo_image, wait_for, FakeApi, Recorded};
use nixcache_crds::{Autoscaling, NixCache, PodDisruptionBudgetSpec};
use nixcache_operator::capabilities::{self, Capabilities, OptionalApi, CONDITION_FEATURES_AVAILABLE};
use nixcache_operator::controller::{self, Scope};
use nixcache_operator::fixtures;
use nixcache_operator::reconcile::reconcile;
use nixcache_operator::{Config, Context, RunOptions};
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const NS: &str = "/api/v1/namespaces/default";
const NC: &str = "/apis/nixcache.dev/v1alpha1/namespaces/default/nixcaches";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/default/deployments/demo";

/// The whole operator process (admin server, discovery, controller) on `api`, without leader
/// election: its admin address, the token that stops it, and its task.
fn run_alone(
    api: &FakeApi,
) -> (
    std::net::SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<nixcache_operator::Result<()>>,
) {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let options = RunOptions {
        admin_listen: addr,
        scope: Scope::Cluster,
        leader_election: None,
        cache_status: None,
    };
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(nixcache_operator::run(context(api), options, shutdown.clone()));
    (addr, shutdown, running)
}

/// The requests of `api` so far, kept across calls (the fake's log is drained).
#[derive(Default)]
struct Requests(Vec<Recorded>);

impl Requests {
    fn update(&mut self, api: &FakeApi) -> &[Recorded] {
        self.0.extend(api.take_log());
        &self.0
    }
}

// ------------------------------------------------------------------ watches

#[tokio::test(start_paused = true)]
async fn a_forbidden_watch_does_not_stall_spec_edits() {
    let api = FakeApi::default();
    api.fail("cronjobs", 403);
    api.insert(
        &format!("{NC}/demo"),
        serde_json::to_value(fixtures::single("demo")).unwrap(),
    );
    let ctx = context(&api);
    let running = tokio::spawn(controller::run(
        ctx.clone(),
        Scope::Cluster,
        std::future::pending(),
    ));
    assert!(
        wait_for(Duration::from_secs(30), || demo_image(&api).is_some()).await,
        "first reconcile"
    );
    // The forbidden list keeps failing and is retried with a growing backoff (not every
    // second). With one backoff for all watches, each failure would pause every watch.
    let mut requests = Requests::default();
    let cronjob_lists = |r: &[Recorded]| {
        r.iter()
            .filter(|r| r.method == "GET" && r.path.ends_with("/cronjobs"))
            .count()
    };
    tokio::time::sleep(Duration::from_secs(120)).await;
    let attempts = cronjob_lists(requests.update(&api));
    assert!(
        (4..=12).contains(&attempts),
        "{attempts} lists of cronjobs in 2 minutes"
    );
    assert!(
        wait_for(Duration::from_secs(60), || cronjob_lists(requests.update(&api))
            > attempts)
        .await
    );
    tokio::time::sleep(Duration::from_millis(100)).await;

    api.edit(&format!("{NC}/demo"), |nc| {
        nc["spec"]["image"] = "registry.test/nixcache:2.0".into()
    });
    api.notify(&format!("{NC}/demo"));
    let edited = wait_for(Duration::from_millis(500), || {
        demo_image(&api).as_deref() == Some("registry.test/nixcache:2.0")
    })
    .await;
    assert!(
        edited,
        "the spec edit is reconciled at once, whatever the cronjobs watch does"
    );
    running.abort();
}

#[tokio::test(start_paused = true)]
async fn a_watch_failing_for_a_minute_is_counted_and_makes_the_operator_unready() {
    let api = FakeApi::default();
    api.fail("secrets", 403);
    let (addr, shutdown, running) = run_alone(&api);
    let mut secrets_failed = Requests::default();
    assert!(
        wait_for(Duration::from_secs(5), || {
            secrets_failed
                .update(&api)
                .iter()
                .any(|r| r.path == "/api/v1/secrets")
        })
        .await
    );
    tokio::time::sleep(Duration::from_secs(61)).await;
    let response = http_get(addr, "/readyz").await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(
        response.contains("the watch of secrets has been failing") && response.contains("403"),
        "{response}"
    );
    // Liveness stays: a restart cannot fix a missing grant.
    assert!(http_get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    let metrics = http_get(addr, "/metrics").await;
    assert!(
        metrics.contains("nixcache_operator_watch_errors_total{watch=\"secrets\"}"),
        "{metrics}"
    );

    // Granted again: the watch lists, and the operator is ready.
    api.heal("secrets");
    let mut ready = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if http_get(addr, "/readyz").await.starts_with("HTTP/1.1 200") {
            ready = true;
            break;
        }
    }
    assert!(ready, "ready once the watch works");
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test(start_paused = true)]
async fn secrets_and_children_are_watched_as_metadata_only() {
    let api = FakeApi::default();
    let ctx = context(&api);
    let running = tokio::spawn(controller::run(
        ctx.clone(),
        Scope::Cluster,
        std::future::pending(),
    ));
    let mut requests = Requests::default();
    assert!(
        wait_for(Duration::from_secs(5), || {
            requests
                .update(&api)
                .iter()
                .filter(|r| r.path == "/api/v1/secrets")
                .count()
                >= 2
        })
        .await,
        "the Secrets are listed and watched"
    );
    running.abort();
    for r in requests.update(&api) {
        if r.path == "/api/v1/secrets" || r.path == "/apis/apps/v1/deployments" {
            assert!(api.asked_metadata_only(r), "{} ?{}", r.line(), r.query);
        }
        if r.path.contains("nixcaches") {
            assert!(
                !api.asked_metadata_only(r),
                "the reconciler needs whole NixCaches"
            );
        }
    }
}

// ------------------------------------------------------------------ an older cluster

fn unserve_newer_apis(api: &FakeApi) {
    api.unserve("batch/v1", "cronjobs");
    api.unserve("autoscaling/v2", "horizontalpodautoscalers");
    api.unserve("policy/v1", "poddisruptionbudgets");
}

fn secret(name: &str, data: &[(&str, &str)]) -> Value {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let data: serde_json::Map<String, Value> =
        data.iter().map(|(k, v)| ((*k).into(), b64(v).into())).collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"}, "data": data})
}

/// S3 + PostgreSQL, three replicas, GC, autoscaling and a disruption budget.
fn everything() -> NixCache {
    let mut nc = fixtures::scaled("demo");
    nc.spec.autoscaling = Some(Autoscaling {
        min_replicas: 3,
        max_replicas: 6,
        target_cpu_utilization_percentage: None,
    });
    nc.spec.pod_disruption_budget = Some(PodDisruptionBudgetSpec {
        min_available: None,
        max_unavailable: Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)),
    });
    nc
}

/// A discovery that keeps failing (here 403 on a hardened cluster) keeps the controller from
/// starting: `/readyz` must say so rather than only "not listed yet".
#[tokio::test(start_paused = true)]
async fn a_failing_discovery_makes_the_operator_unready_and_says_why() {
    let api = FakeApi::default();
    api.fail("/apis/batch/v1", 403);
    let (addr, shutdown, running) = run_alone(&api);
    tokio::time::sleep(Duration::from_secs(90)).await;
    let response = http_get(addr, "/readyz").await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(
        response.contains("API discovery") && response.contains("403"),
        "{response}"
    );
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn discovery_finds_what_an_older_cluster_lacks() {
    let (client, api) = common::start();
    assert_eq!(
        capabilities::discover(&client).await.unwrap(),
        Capabilities::default()
    );
    unserve_newer_apis(&api);
    assert_eq!(
        capabilities::discover(&client).await.unwrap(),
        Capabilities::without(OptionalApi::ALL)
    );
    // Only a 404, or a list without the resource, means "not served": an API server that
    // fails to answer is an error (retried), never taken for an old cluster.
    api.fail("/apis/batch/v1", 503);
    assert!(capabilities::discover(&client).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn discovery_notices_a_changed_cluster() {
    let (client, api) = common::start();
    let watching = tokio::spawn(async move {
        capabilities::changed(&client, &Capabilities::default(), Duration::from_secs(600)).await
    });
    tokio::time::sleep(Duration::from_secs(1000)).await;
    assert!(!watching.is_finished(), "nothing changed yet");
    api.unserve("batch/v1", "cronjobs");
    let found = tokio::time::timeout(Duration::from_secs(700), watching)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, Capabilities::without([OptionalApi::CronJob]));
}

#[tokio::test]
async fn on_a_cluster_without_the_newer_apis_only_their_features_are_off() {
    let (client, api) = common::start();
    unserve_newer_apis(&api);
    let ctx = Arc::new(Context::new(
        client.clone(),
        Config::new("registry.test/nixcache:1.0"),
        Arc::default(),
        None,
    ));
    ctx.set_capabilities(capabilities::discover(&client).await.unwrap());
    api.insert(
        &format!("{NS}/secrets/pg"),
        secret("pg", &[("url", "postgres://u:pw@db/nix")]),
    );
    api.insert(
        &format!("{NS}/secrets/s3"),
        secret(
            "s3",
            &[("AWS_ACCESS_KEY_ID", "id"), ("AWS_SECRET_ACCESS_KEY", "k")],
        ),
    );
    api.insert(&format!("{NC}/demo"), serde_json::to_value(everything()).unwrap());
    let current = || -> NixCache { serde_json::from_value(api.get(&format!("{NC}/demo")).unwrap()).unwrap() };
    reconcile(Arc::new(current()), ctx.clone()).await.unwrap();
    let job = api
        .paths("/apis/batch/v1/namespaces/default/jobs/")
        .pop()
        .unwrap();
    api.set_status(
        &job,
        json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}),
    );
    reconcile(Arc::new(current()), ctx.clone())
        .await
        .expect("the rest of the reconcile goes on");

    let log = api.take_log();
    for r in &log {
        for missing in ["cronjobs", "horizontalpodautoscalers", "poddisruptionbudgets"] {
            assert!(!r.path.contains(missing), "{}", r.line());
        }
    }
    let d = api.get(DEPLOYMENT).expect("the Deployment is applied");
    assert_eq!(
        d["spec"]["replicas"], 3,
        "no autoscaler: the Deployment keeps spec.replicas"
    );
    let args: Vec<&str> = d["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.windows(2).any(|w| w == ["--max-size", "500G"]), "{args:?}");
    assert!(
        args.windows(2).any(|w| w == ["--gc-schedule", "0 4 * * *"]),
        "{args:?}"
    );

    let status = current().status.unwrap();
    let c = status.condition(CONDITION_FEATURES_AVAILABLE).unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "APINotServed"));
    for part in [
        "autoscaling/v2 HorizontalPodAutoscaler is not served by this cluster (Kubernetes 1.23+)",
        "policy/v1 PodDisruptionBudget",
        "spec.gc runs inside the replicas",
    ] {
        assert!(c.message.contains(part), "{}", c.message);
    }
    assert_eq!(status.condition("Degraded").unwrap().status, "False");
}

#[tokio::test(start_paused = true)]
async fn on_a_cluster_without_the_newer_apis_the_controller_does_not_watch_them() {
    let api = FakeApi::default();
    unserve_newer_apis(&api);
    let ctx = context(&api);
    ctx.set_capabilities(Capabilities::without(OptionalApi::ALL));
    let running = tokio::spawn(controller::run(
        ctx.clone(),
        Scope::Cluster,
        std::future::pending(),
    ));
    assert!(
        wait_for(Duration::from_secs(5), || ctx
            .health
            .readiness(Instant::now())
            .is_ok())
        .await
    );
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(ctx.health.readiness(Instant::now()), Ok(()));
    running.abort();
    let log = api.take_log();
    assert!(
        log.iter().any(|r| r.path == "/apis/batch/v1/jobs"),
        "Jobs are watched"
    );
    for r in &log {
        for missing in ["cronjobs", "horizontalpodautoscalers", "poddisruptionbudgets"] {
            assert!(!r.path.contains(missing), "{}", r.line());
        }
    }
}
