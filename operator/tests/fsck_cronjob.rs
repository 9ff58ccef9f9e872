//! `spec.fsck` against the scripted API server: with S3 a CronJob `NAME-fsck` created with the
//! NixCache's owner reference, updated when the section changes and deleted when it is removed;
//! on a volume the replica runs it (`serve --fsck-schedule`), where `repair: false` is an invalid
//! spec; on a cluster without `batch/v1` CronJob a repairing fsck moves into the replicas and a
//! report-only one is reported as not applied.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::world::{lines, notes, World, BATCH};
use nixcache_operator::capabilities::{Capabilities, OptionalApi};
use nixcache_operator::fixtures::{self, NixCacheExt};
use serde_json::{json, Value};

const SCHEDULE: &str = "0 5 * * 0";

fn cronjob_path() -> String {
    format!("{BATCH}/cronjobs/demo-fsck")
}

fn stored(world: &World) -> Value {
    world.api.get(&cronjob_path()).expect("the fsck CronJob exists")
}

fn args(cronjob: &Value) -> Vec<String> {
    let args = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"];
    serde_json::from_value(args.clone()).unwrap()
}

fn serve_args(world: &World) -> Vec<String> {
    let deployment = world
        .api
        .get(&world.deployment_path())
        .expect("the Deployment exists");
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    serde_json::from_value(args.clone()).unwrap()
}

fn has_pair(args: &[String], flag: &str, value: &str) -> bool {
    args.windows(2).any(|w| w[0] == flag && w[1] == value)
}

#[tokio::test]
async fn the_fsck_cronjob_is_created_updated_and_deleted_with_the_section() {
    let world = World::new(&fixtures::scaled("demo").with_fsck(SCHEDULE));
    world.create_ready(3).await;
    let cronjob = stored(&world);
    let command = args(&cronjob);
    assert_eq!(
        command[..4],
        ["fsck", "--repair", "--data-dir", "/var/lib/nixcache"]
    );
    assert!(has_pair(&command, "--s3-bucket", "nix-cache"), "{command:?}");
    assert_eq!(cronjob["spec"]["schedule"], SCHEDULE);
    assert_eq!(cronjob["spec"]["concurrencyPolicy"], "Forbid");
    assert_eq!(cronjob["spec"]["jobTemplate"]["spec"]["backoffLimit"], 0);
    assert_eq!(
        cronjob["metadata"]["labels"]["app.kubernetes.io/component"],
        "fsck"
    );
    let owner = &cronjob["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["name"], &owner["controller"]),
        (&json!("NixCache"), &json!("demo"), &json!(true))
    );
    assert!(!serve_args(&world).iter().any(|a| a.contains("fsck")));

    // Verify, report only, another time zone: the same CronJob, changed.
    world.edit(|nc| {
        nc["spec"]["fsck"] = json!({"schedule": "30 2 * * *", "timeZone": "Europe/Berlin",
            "verify": true, "repair": false});
    });
    let log = world.reconcile().await;
    assert!(lines(&log).contains(&format!("PATCH {}", cronjob_path())));
    let cronjob = stored(&world);
    assert_eq!(args(&cronjob)[..2], ["fsck", "--verify"]);
    assert_eq!(cronjob["spec"]["schedule"], "30 2 * * *");
    assert_eq!(cronjob["spec"]["timeZone"], "Europe/Berlin");
    assert_eq!(world.condition("Degraded").0, "False");

    // The section removed: the CronJob goes, with an event; the GC CronJob stays.
    world.edit(|nc| drop(nc["spec"].as_object_mut().unwrap().remove("fsck")));
    let log = world.reconcile().await;
    assert!(lines(&log).contains(&format!("DELETE {}", cronjob_path())));
    assert!(world.api.get(&cronjob_path()).is_none());
    assert!(world.api.get(&format!("{BATCH}/cronjobs/demo-gc")).is_some());
    assert!(
        notes(&log).contains(&"deleted CronJob demo-fsck: the spec no longer asks for it".to_owned()),
        "{:?}",
        notes(&log)
    );
    let log = world.reconcile().await;
    assert!(
        !lines(&log).iter().any(|l| l.contains("cronjobs/demo-fsck")),
        "{:#?}",
        lines(&log)
    );
}

#[tokio::test]
async fn on_a_volume_the_replica_runs_fsck_itself() {
    let mut nc = fixtures::single("demo").with_fsck(SCHEDULE);
    nc.spec.fsck.as_mut().unwrap().verify = true;
    let world = World::new(&nc);
    world.create_ready(1).await;
    assert!(world.api.get(&cronjob_path()).is_none());
    let args = serve_args(&world);
    assert!(has_pair(&args, "--fsck-schedule", SCHEDULE), "{args:?}");
    assert!(args.contains(&"--fsck-verify".to_owned()), "{args:?}");
    assert_eq!(world.condition("Degraded").0, "False");
}

#[tokio::test]
async fn report_only_on_a_volume_is_an_invalid_spec() {
    let mut nc = fixtures::single("demo").with_fsck(SCHEDULE);
    nc.spec.fsck.as_mut().unwrap().repair = false;
    let world = World::new(&nc);
    let log = world.reconcile().await;
    assert!(
        !lines(&log)
            .iter()
            .any(|l| l.starts_with("PATCH") && !l.ends_with("/status")),
        "nothing is applied: {:#?}",
        lines(&log)
    );
    let (status, reason, message) = world.condition("Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert!(
        message.starts_with("spec.fsck.repair: false needs spec.storage.s3"),
        "{message}"
    );
}

#[tokio::test]
async fn without_the_cronjob_api_a_repairing_fsck_moves_into_the_replicas() {
    let world = World::new(&fixtures::scaled("demo").with_fsck(SCHEDULE));
    world
        .ctx
        .set_capabilities(Capabilities::without([OptionalApi::CronJob]));
    world.create_ready(3).await;
    assert!(world.api.paths(&format!("{BATCH}/cronjobs/")).is_empty());
    assert!(has_pair(&serve_args(&world), "--fsck-schedule", SCHEDULE));
    let (status, reason, message) = world.condition("FeaturesAvailable");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "GarbageCollectionInProcess")
    );
    assert!(
        message.contains("spec.fsck runs inside the replicas"),
        "{message}"
    );

    // Report only: the replicas cannot (their fsck repairs); not applied, and said so.
    world.edit(|nc| nc["spec"]["fsck"]["repair"] = false.into());
    world.reconcile().await;
    assert!(!serve_args(&world).iter().any(|a| a.contains("fsck")));
    let (status, reason, message) = world.condition("FeaturesAvailable");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "APINotServed"));
    assert!(message.contains("spec.fsck is not applied"), "{message}");
}
