//! Leader election against the scripted API server, on tokio's paused (virtual) clock: replicas
//! whose clocks disagree, a renewal that hangs, and a leader that loses the Lease while a
//! reconciliation is under way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{context, demo_image, lease_config, wait_for, FakeApi, Recorded};
use nixcache_operator::controller::Scope;
use nixcache_operator::fixtures;
use nixcache_operator::leader::LeaderElector;
use nixcache_operator::{Error, RunOptions};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const NS: &str = "/api/v1/namespaces/default";
const NC: &str = "/apis/nixcache.dev/v1alpha1/namespaces/default/nixcaches";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/nixcache-operator";

/// Shifts the renew time the holder wrote by `seconds`: how a replica whose clock differs by
/// that much sees it.
fn skew(api: &FakeApi, seconds: i64) {
    api.edit(LEASE, |l| {
        let written: k8s_openapi::jiff::Timestamp = l["spec"]["renewTime"].as_str().unwrap().parse().unwrap();
        let seen = written + k8s_openapi::jiff::SignedDuration::from_secs(seconds);
        l["spec"]["renewTime"] = seen.to_string().into();
    });
}

#[tokio::test(start_paused = true)]
async fn a_standby_whose_clock_runs_ahead_leaves_a_healthy_leader_alone() {
    let (client, api) = common::start();
    let a = LeaderElector::new(client.clone(), lease_config("a"));
    let b = LeaderElector::new(client, lease_config("b"));
    assert!(a.try_acquire_or_renew().await.unwrap());
    // b's clock is 20 s ahead: every renewTime a writes looks 20 s old to b.
    for _ in 0..15 {
        skew(&api, -20);
        assert!(!b.try_acquire_or_renew().await.unwrap(), "a renews; b waits");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(a.try_acquire_or_renew().await.unwrap(), "a keeps the Lease");
    }
    // a stops renewing: b takes over one lease duration after the record last changed.
    skew(&api, -20);
    assert!(!b.try_acquire_or_renew().await.unwrap());
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert!(!b.try_acquire_or_renew().await.unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(b.try_acquire_or_renew().await.unwrap());
    assert_eq!(api.get(LEASE).unwrap()["spec"]["holderIdentity"], "b");
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_clock_runs_ahead_is_replaced_after_one_lease_duration() {
    let (client, api) = common::start();
    let a = LeaderElector::new(client.clone(), lease_config("a"));
    let b = LeaderElector::new(client, lease_config("b"));
    assert!(a.try_acquire_or_renew().await.unwrap());
    // a's last renewTime is 20 s in b's future; then a dies.
    skew(&api, 20);
    assert!(!b.try_acquire_or_renew().await.unwrap());
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "not 35 s: a's timestamps do not count"
    );
}

#[tokio::test(start_paused = true)]
async fn a_renewal_that_hangs_steps_down_within_the_renew_deadline() {
    let (client, api) = common::start();
    let config = lease_config("a");
    let a = LeaderElector::new(client, config.clone());
    let renewed = Instant::now();
    assert!(a.try_acquire_or_renew().await.unwrap());
    api.hang(LEASE);
    let lost = tokio::time::timeout(Duration::from_secs(60), a.hold())
        .await
        .expect("hold() returns although no request is ever answered");
    assert!(matches!(lost, Error::LostLeadership(_)), "{lost}");
    assert!(
        renewed.elapsed() <= config.renew_deadline,
        "stepped down after {:?}, renew deadline {:?}",
        renewed.elapsed(),
        config.renew_deadline
    );
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_loses_the_lease_stops_reconciling_before_its_next_write() {
    let api = FakeApi::default();
    api.insert(
        &format!("{NC}/demo"),
        serde_json::to_value(fixtures::single("demo")).unwrap(),
    );
    let ctx = context(&api);
    let config = lease_config("a");
    let options = RunOptions {
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        scope: Scope::Cluster,
        leader_election: Some(config.clone()),
        cache_status: None,
    };
    let running = tokio::spawn(nixcache_operator::run(
        ctx.clone(),
        options,
        CancellationToken::new(),
    ));
    assert!(wait_for(Duration::from_secs(30), || demo_image(&api).is_some()).await);

    // A reconciliation is under way, stuck in its Service apply, when the API server stops
    // answering the Lease.
    let service = format!("{NS}/services/demo");
    api.hang(&service);
    api.edit(&format!("{NC}/demo"), |nc| {
        nc["spec"]["image"] = "registry.test/nixcache:2.0".into()
    });
    api.notify(&format!("{NC}/demo"));
    let stuck = format!("PATCH {service}");
    assert!(wait_for(Duration::from_secs(1), || api.held().contains(&stuck)).await);
    api.hang(LEASE);
    let hung = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("run() returns")
        .unwrap();
    assert!(matches!(result, Err(Error::LostLeadership(_))), "{result:?}");
    assert!(hung.elapsed() <= config.renew_deadline, "{:?}", hung.elapsed());
    assert_eq!(ctx.metrics.leader.get(), 0);

    // The Service apply is answered now: the reconciliation was dropped, nothing follows it.
    api.take_log();
    api.answer_held(&service);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after: Vec<String> = api
        .take_log()
        .iter()
        .filter(|r| r.method != "GET")
        .map(Recorded::line)
        .collect();
    assert!(after.is_empty(), "{after:#?}");
    assert_eq!(demo_image(&api).as_deref(), Some("registry.test/nixcache:1.0"));
}
