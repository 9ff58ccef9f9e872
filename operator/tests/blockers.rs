//! Problems a user must fix end as conditions that say what to do, not as retried errors; and
//! leader election over a Lease, both against the scripted API server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::lease_config;
use nixcache_crds::NixCache;
use nixcache_operator::fixtures::{self, NixCacheExt};
use nixcache_operator::leader::LeaderElector;
use nixcache_operator::reconcile::reconcile;
use nixcache_operator::{Config, Context};
use serde_json::{json, Value};

const NS: &str = "/api/v1/namespaces/default";
const NC: &str = "/apis/nixcache.dev/v1alpha1/namespaces/default/nixcaches";

fn secret(name: &str, data: &[(&str, &str)]) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let data: serde_json::Map<String, Value> =
        data.iter().map(|(k, v)| ((*k).into(), b64(v).into())).collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"}, "data": data})
}

async fn reconcile_once(nc: &NixCache, secrets: &[Value]) -> (common::FakeApi, Vec<String>, NixCache) {
    let (client, api) = common::start();
    let ctx = Arc::new(Context::new(client, Config::default(), Arc::default(), None));
    api.insert(&format!("{NC}/demo"), serde_json::to_value(nc).unwrap());
    for s in secrets {
        api.insert(
            &format!("{NS}/secrets/{}", s["metadata"]["name"].as_str().unwrap()),
            s.clone(),
        );
    }
    api.take_log();
    reconcile(Arc::new(nc.clone()), ctx)
        .await
        .expect("a blocker is not an error");
    let log = api.take_log().iter().map(|r| r.line()).collect();
    let stored = serde_json::from_value(api.get(&format!("{NC}/demo")).unwrap()).unwrap();
    (api, log, stored)
}

fn degraded(nc: &NixCache) -> (String, String, String) {
    let c = nc.status.as_ref().unwrap().condition("Degraded").unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn applied(log: &[String]) -> Vec<&String> {
    log.iter()
        .filter(|l| l.starts_with("PATCH") && !l.ends_with("/status"))
        .collect()
}

#[tokio::test]
async fn a_missing_database_secret_names_the_field_and_applies_nothing() {
    let s3 = secret(
        "s3",
        &[("AWS_ACCESS_KEY_ID", "id"), ("AWS_SECRET_ACCESS_KEY", "k")],
    );
    let (_, log, nc) = reconcile_once(&fixtures::scaled("demo"), &[s3]).await;
    assert_eq!(log[0], format!("GET {NS}/secrets/pg"));
    assert!(applied(&log).is_empty(), "{log:#?}");
    let (status, reason, message) = degraded(&nc);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "SecretNotFound"));
    assert!(
        message.contains("Secret pg") && message.contains("spec.database.urlSecretRef"),
        "{message}"
    );
    assert_eq!(
        nc.status.unwrap().condition("Ready").unwrap().reason,
        "SecretNotFound"
    );
}

#[tokio::test]
async fn a_missing_key_lists_the_keys_there_are() {
    let pg = secret("pg", &[("password", "x")]);
    let (_, _, nc) = reconcile_once(&fixtures::scaled("demo"), &[pg]).await;
    let (_, reason, message) = degraded(&nc);
    assert_eq!(reason, "SecretKeyMissing");
    assert!(
        message.contains("no key \"url\"") && message.contains("its keys: password"),
        "{message}"
    );
}

#[tokio::test]
async fn a_database_url_of_the_wrong_kind_is_refused_without_showing_it() {
    let pg = secret("pg", &[("url", "sqlite:///secret/path")]);
    let (_, _, nc) = reconcile_once(&fixtures::scaled("demo"), &[pg]).await;
    let (_, reason, message) = degraded(&nc);
    assert_eq!(reason, "InvalidDatabaseUrl");
    assert!(
        message.contains("spec.database.sqlite") && !message.contains("/secret/path"),
        "{message}"
    );
}

#[tokio::test]
async fn a_broken_signing_key_is_reported_without_key_material() {
    let own = secret("own", &[("secret-key", "name:bm90IGEga2V5")]);
    let nc = fixtures::single("demo").with_signing_secret("own");
    let (api, log, nc) = reconcile_once(&nc, &[own]).await;
    let (_, reason, message) = degraded(&nc);
    assert_eq!(reason, "InvalidSigningKey");
    assert!(
        message.contains("Secret own") && !message.contains("bm90IGEga2V5"),
        "{message}"
    );
    assert!(applied(&log).is_empty());
    assert!(api.get(&format!("{NS}/secrets/demo-signing-key")).is_none());
}

#[tokio::test]
async fn a_spec_the_cel_rules_would_reject_is_invalid_not_rendered() {
    let mut nc = fixtures::single("demo");
    nc.spec.replicas = 3;
    let (_, log, nc) = reconcile_once(&nc, &[]).await;
    assert_eq!(
        log,
        [
            format!("PATCH {NC}/demo/status"),
            "POST /apis/events.k8s.io/v1/namespaces/default/events".to_owned()
        ]
    );
    let (_, reason, message) = degraded(&nc);
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains("spec.replicas"), "{message}");
}

#[tokio::test]
async fn sqlite_on_a_volume_needs_no_job_and_collects_garbage_in_process() {
    let mut nc = fixtures::single("demo").with_generation(1);
    nc.spec.gc = Some(nixcache_crds::GarbageCollection {
        max_size: "40G".into(),
        schedule: None,
        time_zone: None,
        keep_uploads: false,
    });
    let (api, log, _) = reconcile_once(&nc, &[]).await;
    assert!(
        !log.iter()
            .any(|l| l.contains("/jobs/") || l.contains("/cronjobs/demo-gc") && l.starts_with("PATCH")),
        "{log:#?}"
    );
    assert!(log.contains(&format!("PATCH {NS}/persistentvolumeclaims/demo-data")));
    let claim = api
        .get(&format!("{NS}/persistentvolumeclaims/demo-data"))
        .unwrap();
    assert!(
        claim["metadata"]["ownerReferences"].is_null(),
        "the data outlives the NixCache"
    );
    let d = api
        .get("/apis/apps/v1/namespaces/default/deployments/demo")
        .unwrap();
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    let args: Vec<&str> = d["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let at = args.iter().position(|a| *a == "--gc-schedule").unwrap();
    assert_eq!(args[at + 1], "17 3 * * *");
    assert!(args.windows(2).any(|w| w == ["--max-size", "40G"]));
}

#[tokio::test]
async fn a_changed_secret_rolls_the_pods() {
    let s3 = secret(
        "s3",
        &[("AWS_ACCESS_KEY_ID", "id"), ("AWS_SECRET_ACCESS_KEY", "k")],
    );
    let hash = |api: &common::FakeApi| {
        let d = api
            .get("/apis/apps/v1/namespaces/default/deployments/demo")
            .unwrap();
        d["spec"]["template"]["metadata"]["annotations"]["nixcache.dev/secrets-hash"].clone()
    };
    let pg = secret("pg", &[("url", "postgres://a@db/x")]);
    let (api, _, _) = reconcile_once(&fixtures::scaled("demo"), &[pg, s3]).await;
    let job = api
        .paths("/apis/batch/v1/namespaces/default/jobs/")
        .pop()
        .unwrap();
    api.set_status(&job, json!({"succeeded": 1}));
    let ctx = Arc::new(Context::new(
        common::client_for(&api),
        Config::default(),
        Arc::default(),
        None,
    ));
    let current: NixCache = serde_json::from_value(api.get(&format!("{NC}/demo")).unwrap()).unwrap();
    reconcile(Arc::new(current), ctx.clone()).await.unwrap();
    let first = hash(&api);
    api.edit(&format!("{NS}/secrets/s3"), |s| {
        s["data"]["AWS_SECRET_ACCESS_KEY"] = "cm90YXRlZA==".into()
    });
    let current: NixCache = serde_json::from_value(api.get(&format!("{NC}/demo")).unwrap()).unwrap();
    reconcile(Arc::new(current), ctx).await.unwrap();
    assert!(first.is_string());
    assert_ne!(
        first,
        hash(&api),
        "the pod template changes, so the Deployment rolls"
    );
}

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/nixcache-operator";

#[tokio::test(start_paused = true)]
async fn leader_election_creates_renews_waits_and_takes_over() {
    let (client, api) = common::start();
    let a = LeaderElector::new(client.clone(), lease_config("a"));
    let b = LeaderElector::new(client, lease_config("b"));
    assert!(a.try_acquire_or_renew().await.unwrap(), "a creates the Lease");
    assert_eq!(
        api.take_log().iter().map(|r| r.line()).collect::<Vec<_>>(),
        [
            format!("GET {LEASE}"),
            "POST /apis/coordination.k8s.io/v1/namespaces/ops/leases".to_owned()
        ]
    );
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "b waits while a's Lease is fresh"
    );
    assert_eq!(
        api.take_log().iter().map(|r| r.line()).collect::<Vec<_>>(),
        [format!("GET {LEASE}")]
    );
    assert!(a.try_acquire_or_renew().await.unwrap(), "a renews");
    assert_eq!(api.get(LEASE).unwrap()["spec"]["holderIdentity"], "a");
    // a stops renewing: once b has seen the same record for 15 s (its own clock; the old
    // renewTime alone does not count), b takes over.
    api.edit(LEASE, |l| {
        l["spec"]["renewTime"] = "2020-01-01T00:00:00.000000Z".into()
    });
    assert!(!b.try_acquire_or_renew().await.unwrap());
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(b.try_acquire_or_renew().await.unwrap());
    let lease = api.get(LEASE).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert!(
        !a.try_acquire_or_renew().await.unwrap(),
        "a sees b's fresh Lease and does not act"
    );
    // Release on shutdown hands over at once.
    b.release().await;
    assert!(api.get(LEASE).unwrap()["spec"]["holderIdentity"].is_null());
    assert!(a.try_acquire_or_renew().await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn of_two_racing_replicas_only_one_wins_the_lease() {
    let (client, api) = common::start();
    let a = LeaderElector::new(client.clone(), lease_config("a"));
    a.try_acquire_or_renew().await.unwrap();
    // a stops renewing; c has watched the Lease unchanged for a lease duration.
    let c = LeaderElector::new(client.clone(), lease_config("c"));
    assert!(!c.try_acquire_or_renew().await.unwrap());
    tokio::time::sleep(Duration::from_secs(15)).await;
    // b read the expired Lease; c writes first; b's write carries the old resourceVersion.
    let stale = api.get(LEASE).unwrap();
    assert!(c.try_acquire_or_renew().await.unwrap());
    api.take_log();
    let mut b_write = stale.clone();
    b_write["spec"]["holderIdentity"] = "b".into();
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> = kube::Api::namespaced(client, "ops");
    let result = leases
        .replace(
            "nixcache-operator",
            &Default::default(),
            &serde_json::from_value(b_write).unwrap(),
        )
        .await;
    assert!(
        matches!(result, Err(kube::Error::Api(s)) if s.code == 409),
        "the stale write conflicts"
    );
    assert_eq!(api.get(LEASE).unwrap()["spec"]["holderIdentity"], "c");
}
