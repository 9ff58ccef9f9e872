//! Turning autoscaling on hands `spec.replicas` of the Deployment over without a dip: the
//! current count is applied under a second field manager before the operator's apply leaves
//! the field out (the scripted API keeps a field another manager owns, as the API server does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::world::World;
use common::Recorded;
use nixcache_operator::fixtures;
use serde_json::{json, Value};

const HPA: &str = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/demo";

fn autoscale(nc: &mut Value) {
    nc["spec"]["autoscaling"] = json!({"minReplicas": 2, "maxReplicas": 6});
}

/// (field manager, applied spec.replicas) of each apply of the Deployment.
fn deployment_applies(world: &World, log: &[Recorded]) -> Vec<(String, Value)> {
    let path = world.deployment_path();
    log.iter()
        .filter(|r| r.is_apply() && r.path == path)
        .map(|r| {
            let replicas = r.body.as_ref().unwrap()["spec"]["replicas"].clone();
            (r.field_manager().unwrap(), replicas)
        })
        .collect()
}

fn replicas(world: &World) -> Value {
    world.api.get(&world.deployment_path()).unwrap()["spec"]["replicas"].clone()
}

#[tokio::test]
async fn turning_autoscaling_on_keeps_the_replica_count() {
    let world = World::new(&fixtures::scaled("demo"));
    world.create_ready(3).await;
    world.edit(autoscale);
    let log = world.reconcile().await;
    assert_eq!(replicas(&world), 3, "not one replica until the autoscaler acts");
    assert_eq!(
        deployment_applies(&world, &log),
        [
            ("nixcache-operator-handover".to_owned(), json!(3)),
            ("nixcache-operator".to_owned(), Value::Null),
        ]
    );
    assert!(world.api.get(HPA).is_some());

    // The autoscaler scales through the scale subresource; the operator leaves the count alone.
    world
        .api
        .scale(&world.deployment_path(), 5, "kube-controller-manager");
    let log = world.reconcile().await;
    assert_eq!(
        deployment_applies(&world, &log),
        [("nixcache-operator".to_owned(), Value::Null)]
    );
    assert_eq!(replicas(&world), 5);
}

#[tokio::test]
async fn turning_autoscaling_off_takes_the_replica_count_back() {
    let world = World::new(&fixtures::scaled("demo"));
    world.create_ready(3).await;
    world.edit(autoscale);
    world.reconcile().await;
    world
        .api
        .scale(&world.deployment_path(), 5, "kube-controller-manager");
    world.edit(|nc| {
        nc["spec"].as_object_mut().unwrap().remove("autoscaling");
    });
    let log = world.reconcile().await;
    assert_eq!(
        deployment_applies(&world, &log),
        [("nixcache-operator".to_owned(), json!(3))]
    );
    assert_eq!(replicas(&world), 3, "spec.replicas again");
    assert!(world.api.get(HPA).is_none());

    // And on again: handed over again, at the operator's count.
    world.edit(autoscale);
    let log = world.reconcile().await;
    assert_eq!(
        deployment_applies(&world, &log)[0],
        ("nixcache-operator-handover".to_owned(), json!(3))
    );
    assert_eq!(replicas(&world), 3);
}

#[tokio::test]
async fn a_deployment_created_for_autoscaling_needs_no_handover() {
    let mut nc = fixtures::scaled("demo");
    nc.spec.autoscaling = Some(serde_json::from_value(json!({"minReplicas": 2, "maxReplicas": 6})).unwrap());
    let world = World::new(&nc);
    for _ in 0..3 {
        if let Some(job) = world.job_paths().pop() {
            world.succeed_job(&job);
        }
        let log = world.reconcile().await;
        assert!(
            deployment_applies(&world, &log)
                .iter()
                .all(|(manager, replicas)| manager == "nixcache-operator" && replicas.is_null()),
            "{:?}",
            deployment_applies(&world, &log)
        );
    }
    assert!(world.api.get(&world.deployment_path()).is_some());
}
