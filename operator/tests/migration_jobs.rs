//! Migration Jobs never wedge a NixCache: a Job's pod template is immutable (the scripted API
//! answers 422 like the API server), so a template change replaces a running or failed Job and
//! leaves a succeeded one alone; superseded Jobs are deleted once the Deployment moved on, also
//! after a change of the database Secret only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::world::{lines, notes, position, secret, World, BATCH, NS};
use nixcache_operator::fixtures;
use serde_json::{json, Value};

fn tolerate(nc: &mut Value) {
    nc["spec"]["tolerations"] = json!([{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]);
}

fn tolerations(object: &Value) -> &Value {
    &object["spec"]["template"]["spec"]["tolerations"]
}

#[tokio::test]
async fn a_running_migration_job_with_another_pod_template_is_replaced() {
    let world = World::new(&fixtures::scaled("demo"));
    world.reconcile().await;
    let job = world.unfinished_job();
    let before = world.api.get(&job).unwrap();
    world.edit(tolerate);
    let log = world.reconcile().await;
    let order = lines(&log);
    let get = position(&order, &format!("GET {job}"));
    let delete = position(&order, &format!("DELETE {job}"));
    let apply = position(&order, &format!("PATCH {job}"));
    assert!(get < delete && delete < apply, "{order:#?}");
    let replaced = world
        .api
        .get(&job)
        .expect("the Job is created again under its name");
    assert_ne!(replaced["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(tolerations(&replaced)[0]["key"], "dedicated");
    assert!(
        notes(&log)
            .iter()
            .any(|n| n.starts_with("deleted Job demo-migrate-") && n.contains("pod template changed")),
        "{:?}",
        notes(&log)
    );
    assert_eq!(world.condition("Progressing").1, "Migrating");
    assert_eq!(world.condition("Degraded").0, "False");

    // The replacement has the current template: the next reconciliation only re-applies it.
    let log = world.reconcile().await;
    assert!(
        !lines(&log).iter().any(|l| l.starts_with("DELETE")),
        "{:#?}",
        lines(&log)
    );
    assert_eq!(
        world.api.get(&job).unwrap()["metadata"]["uid"],
        replaced["metadata"]["uid"]
    );
}

#[tokio::test]
async fn a_failed_migration_job_is_retried_with_the_new_pod_template() {
    let world = World::new(&fixtures::scaled("demo"));
    world.reconcile().await;
    let job = world.unfinished_job();
    world.fail_job(&job);
    world.reconcile().await;
    assert_eq!(world.condition("Degraded").1, "MigrationFailed");
    // E.g. the pull secret the migration pods lacked.
    world.edit(|nc| nc["spec"]["imagePullSecrets"] = json!([{"name": "registry"}]));
    world.reconcile().await;
    let retried = world.api.get(&job).unwrap();
    assert!(retried["status"].is_null(), "a new Job: {retried:#}");
    assert_eq!(
        retried["spec"]["template"]["spec"]["imagePullSecrets"],
        json!([{"name": "registry"}])
    );
    assert_eq!(world.condition("Degraded").0, "False");
    assert_eq!(world.condition("Progressing").1, "Migrating");
}

#[tokio::test]
async fn a_succeeded_migration_is_not_run_again_for_another_pod_template() {
    let world = World::new(&fixtures::scaled("demo"));
    let job = world.create_ready(3).await.unwrap();
    let before = world.api.get(&job).unwrap();
    world.edit(tolerate);
    let log = world.reconcile().await;
    let order = lines(&log);
    let jobs: Vec<&String> = order.iter().filter(|l| l.contains("/jobs/")).collect();
    assert_eq!(jobs, [&format!("GET {job}")], "read, neither applied nor deleted");
    assert_eq!(world.api.get(&job).unwrap(), before);
    let deployment = world.api.get(&world.deployment_path()).unwrap();
    assert_eq!(
        tolerations(&deployment)[0]["key"],
        "dedicated",
        "the replicas move on"
    );
    assert_eq!(world.condition("Degraded").0, "False");
    assert_eq!(world.current().status.unwrap().observed_generation, Some(2));
}

#[tokio::test]
async fn the_old_job_goes_after_a_new_database_url_in_the_same_secret() {
    let world = World::new(&fixtures::scaled("demo"));
    let old = world.create_ready(3).await.unwrap();
    let moved = secret("pg", &[("url", "postgres://u:pw@db2/nix")]);
    world
        .api
        .edit(&format!("{NS}/secrets/pg"), |s| s["data"] = moved["data"].clone());
    world.reconcile().await;
    let new = world.unfinished_job();
    assert_ne!(new, old, "a migration for the new database");
    assert!(
        world.api.get(&old).is_some(),
        "kept while the replicas still use it"
    );

    world.succeed_job(&new);
    let log = world.reconcile().await;
    let order = lines(&log);
    let deployed = position(&order, &format!("PATCH {}", world.deployment_path()));
    let deleted = position(&order, &format!("DELETE {old}"));
    assert!(deployed < deleted, "{order:#?}");
    assert_eq!(world.job_paths(), std::slice::from_ref(&new));
    assert_eq!(
        world.current().status.unwrap().migration_job.as_deref(),
        new.rsplit('/').next()
    );

    // Nothing left to clean up: no list of Jobs any more.
    let log = world.reconcile().await;
    assert!(
        !lines(&log).contains(&format!("GET {BATCH}/jobs")),
        "{:#?}",
        lines(&log)
    );
}

#[tokio::test]
async fn every_superseded_job_goes_failed_ones_too_but_not_foreign_ones() {
    let world = World::new(&fixtures::scaled("demo"));
    let first = world.create_ready(3).await.unwrap();
    // Labelled like ours, but not owned by this NixCache.
    let foreign = format!("{BATCH}/jobs/demo-migrate-by-hand");
    world.api.insert(
        &foreign,
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "demo-migrate-by-hand",
               "namespace": "default", "labels": {"app.kubernetes.io/component": "migrate",
               "app.kubernetes.io/instance": "demo"}}}),
    );
    world.succeed_job(&foreign);
    world.edit(|nc| nc["spec"]["image"] = "registry.test/nixcache:2.0".into());
    world.reconcile().await;
    let failed = world.unfinished_job();
    world.fail_job(&failed);
    world.reconcile().await;
    assert_eq!(world.condition("Degraded").1, "MigrationFailed");

    world.edit(|nc| nc["spec"]["image"] = "registry.test/nixcache:3.0".into());
    world.reconcile().await;
    let current = world.unfinished_job();
    world.succeed_job(&current);
    let log = world.reconcile().await;
    let order = lines(&log);
    assert!(order.contains(&format!("DELETE {first}")), "{order:#?}");
    assert!(order.contains(&format!("DELETE {failed}")), "{order:#?}");
    let mut left = world.job_paths();
    left.sort();
    let mut wanted = vec![current, foreign];
    wanted.sort();
    assert_eq!(left, wanted);
}
