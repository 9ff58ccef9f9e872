//! The warm-up CronJob (`spec.warm`) against the scripted API server: created with the
//! NixCache's owner reference, updated when the paths or the schedule change, deleted when the
//! section is removed; an invalid path, or a schedule the API server refuses, is reported in the
//! status as a warning while the rest is applied; on a cluster without `batch/v1` CronJob it is
//! reported as not applied.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::world::{lines, notes, position, World, BATCH};
use common::Recorded;
use nixcache_operator::capabilities::{Capabilities, OptionalApi};
use nixcache_operator::fixtures::{self, NixCacheExt, HELLO};
use nixcache_operator::reconcile::reconcile;
use serde_json::{json, Value};

const OTHER: &str = "/nix/store/0c0wf1qw0hh0gmgxbbd1k7ligmakdfrn-glibc-2.40-66";

fn cronjob_path() -> String {
    format!("{BATCH}/cronjobs/demo-warm")
}

fn stored(world: &World) -> Value {
    world
        .api
        .get(&cronjob_path())
        .expect("the warm-up CronJob exists")
}

fn args(cronjob: &Value) -> Value {
    cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"].clone()
}

fn applied_warm(log: &[Recorded]) -> bool {
    lines(log).contains(&format!("PATCH {}", cronjob_path()))
}

#[tokio::test]
async fn the_warm_cronjob_is_created_updated_and_deleted_with_the_section() {
    let mut nc = fixtures::scaled("demo").with_warm("30 4 * * *", &[HELLO]);
    nc.spec.service_account_name = Some("irsa".into());
    let world = World::new(&nc);
    world.create_ready(3).await;
    let cronjob = stored(&world);
    assert_eq!(
        args(&cronjob),
        json!(["warm", "--url", "http://demo.default.svc:8501", HELLO])
    );
    // The replicas' (IRSA) identity writes to S3; the warm-up pod runs as the namespace's default.
    let pod = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], Value::Null, "{pod}");
    assert_eq!(pod["automountServiceAccountToken"], false);
    let deployment = world.api.get(&world.deployment_path()).unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        "irsa"
    );
    assert_eq!(cronjob["spec"]["schedule"], "30 4 * * *");
    assert_eq!(cronjob["spec"]["concurrencyPolicy"], "Forbid");
    let owner = &cronjob["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["name"], &owner["controller"]),
        (&json!("NixCache"), &json!("demo"), &json!(true))
    );

    // New paths, schedule and settings: the same CronJob, changed.
    world.edit(|nc| {
        nc["spec"]["warm"] = json!({"schedule": "0 5 * * 1", "timeZone": "Europe/Berlin",
            "paths": [HELLO, OTHER], "narinfosOnly": true, "concurrency": 2});
    });
    let log = world.reconcile().await;
    assert!(applied_warm(&log), "{:#?}", lines(&log));
    let cronjob = stored(&world);
    assert_eq!(
        args(&cronjob),
        json!([
            "warm",
            "--url",
            "http://demo.default.svc:8501",
            "--concurrency",
            "2",
            "--narinfos-only",
            HELLO,
            OTHER
        ])
    );
    assert_eq!(cronjob["spec"]["schedule"], "0 5 * * 1");
    assert_eq!(cronjob["spec"]["timeZone"], "Europe/Berlin");
    assert_eq!(world.condition("Degraded").0, "False");

    // The section removed: the CronJob goes, with an event; the GC CronJob stays.
    world.edit(|nc| drop(nc["spec"].as_object_mut().unwrap().remove("warm")));
    let log = world.reconcile().await;
    assert!(lines(&log).contains(&format!("DELETE {}", cronjob_path())));
    assert!(world.api.get(&cronjob_path()).is_none());
    assert!(world.api.get(&format!("{BATCH}/cronjobs/demo-gc")).is_some());
    assert!(
        notes(&log).contains(&"deleted CronJob demo-warm: the spec no longer asks for it".to_owned()),
        "{:?}",
        notes(&log)
    );
    // Once the status says so, nothing is looked for again.
    let log = world.reconcile().await;
    assert!(
        !lines(&log).iter().any(|l| l.contains("cronjobs/demo-warm")),
        "{:#?}",
        lines(&log)
    );
}

#[tokio::test]
async fn an_invalid_path_is_reported_and_the_rest_goes_on() {
    let nc = fixtures::scaled("demo").with_warm("30 4 * * *", &[HELLO]);
    let world = World::new(&nc);
    world.create_ready(3).await;
    let before = stored(&world);

    // `.-x` is a name Nix reserves (the CRD's pattern lets it through); the image changes too.
    let bad = "/nix/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4-.-x";
    world.edit(|nc| {
        nc["spec"]["warm"]["paths"] = json!([HELLO, bad]);
        nc["spec"]["warm"]["schedule"] = "0 6 * * *".into();
        nc["spec"]["image"] = "registry.test/nixcache:2.0".into();
    });
    // Checked before the migration is over: Degraded does not wait for it.
    let log = world.reconcile().await;
    assert!(warned(&log), "{log:#?}");
    assert_eq!(world.condition("Progressing").1, "Migrating");
    let job = world.unfinished_job();
    world.succeed_job(&job);
    let log = world.reconcile().await;
    assert!(
        lines(&log).contains(&format!("PATCH {}", world.deployment_path())),
        "the Deployment moves on: {:#?}",
        lines(&log)
    );
    assert!(!applied_warm(&log), "{:#?}", lines(&log));
    assert_eq!(stored(&world)["spec"], before["spec"], "left as it was");
    let (status, reason, message) = world.condition("Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert!(
        message.starts_with(&format!("spec.warm.paths[1] \"{bad}\" is not a store path:"))
            && message.contains("is not allowed")
            && message.contains("The warm-up CronJob is left as it is"),
        "{message}"
    );
    assert_applied(&world, "RollingOut");
    // Not a blocked generation: the next reconcile deletes nothing, and writes no status.
    world.deployment_ready(3);
    world.reconcile().await;
    assert_eq!(world.condition("Progressing").1, "UpToDate");
    let log = world.reconcile().await;
    assert!(
        !lines(&log)
            .iter()
            .any(|l| l.starts_with("DELETE") || l.ends_with("/status")),
        "{:#?}",
        lines(&log)
    );

    // Fixed: applied, and nothing is wrong any more.
    world.edit(|nc| nc["spec"]["warm"]["paths"] = json!([OTHER]));
    let log = world.reconcile().await;
    assert!(applied_warm(&log));
    let cronjob = stored(&world);
    assert_eq!(args(&cronjob)[3], OTHER);
    assert_eq!(cronjob["spec"]["schedule"], "0 6 * * *");
    assert_eq!(world.condition("Degraded").0, "False");
}

/// After an invalid `spec.warm`: the generation applied and observed, Progressing as the
/// rollout goes (`progressing`), as if nothing were wrong.
fn assert_applied(world: &World, progressing: &str) {
    let nc = world.current();
    assert_eq!(
        nc.status.as_ref().unwrap().observed_generation,
        nc.metadata.generation
    );
    let (status, reason, message) = world.condition("Progressing");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", progressing),
        "{message}"
    );
}

/// Whether `log` has the Warning event of Degraded turning InvalidSpec.
fn warned(log: &[Recorded]) -> bool {
    log.iter()
        .filter(|r| r.method == "POST" && r.path.starts_with("/apis/events.k8s.io/"))
        .filter_map(|r| r.body.as_ref())
        .any(|event| event["type"] == "Warning" && event["reason"] == "InvalidSpec")
}

#[tokio::test]
async fn a_schedule_the_api_server_refuses_is_reported_and_the_rest_goes_on() {
    let nc = fixtures::scaled("demo").with_warm("30 4 * * *", &[HELLO]);
    let world = World::new(&nc);
    let old_job = world.create_ready(3).await.unwrap();
    // As kube-apiserver refuses a schedule out of range (the CRD cannot check cron syntax).
    let refusal = "CronJob.batch \"demo-warm\" is invalid: spec.schedule: Invalid value: \"61 * * * *\": \
                   End of range (61) above maximum (59): 61";
    world.api.refuse(&cronjob_path(), 422, "Invalid", refusal);
    world.edit(|nc| {
        nc["spec"]["warm"]["schedule"] = "61 * * * *".into();
        nc["spec"]["podDisruptionBudget"] = json!({"minAvailable": 1});
        nc["spec"]["image"] = "registry.test/nixcache:2.0".into();
    });
    world.reconcile().await;
    let job = world.unfinished_job();
    world.succeed_job(&job);
    let log = world.reconcile().await;
    let lines = lines(&log);
    let pdb = "PATCH /apis/policy/v1/namespaces/default/poddisruptionbudgets/demo".to_owned();
    let warm = position(&lines, &format!("PATCH {}", cronjob_path()));
    assert!(position(&lines, &format!("PATCH {}", world.deployment_path())) < warm);
    assert!(position(&lines, &pdb) < warm, "the warm-up CronJob comes last");
    assert!(
        position(&lines, &format!("DELETE {old_job}")) > warm,
        "the superseded migration Job is still deleted"
    );
    assert_eq!(stored(&world)["spec"]["schedule"], "30 4 * * *", "left as it was");
    let (status, reason, message) = world.condition("Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert!(
        message.starts_with("spec.warm.schedule: the API server refused the warm-up CronJob demo-warm: ")
            && message.contains("End of range (61) above maximum (59)")
            && message.contains("the rest of the NixCache is applied"),
        "{message}"
    );
    assert_applied(&world, "RollingOut");
    assert!(warned(&log), "{log:#?}");

    // Fixed: applied, and nothing is wrong any more.
    world.api.allow(&cronjob_path());
    world.edit(|nc| nc["spec"]["warm"]["schedule"] = "0 6 * * *".into());
    let log = world.reconcile().await;
    assert!(applied_warm(&log));
    assert_eq!(stored(&world)["spec"]["schedule"], "0 6 * * *");
    assert_eq!(world.condition("Degraded").0, "False");
}

#[tokio::test]
async fn a_refusal_that_is_not_the_specs_fault_is_retried_not_reported() {
    let nc = fixtures::scaled("demo").with_warm("30 4 * * *", &[HELLO]);
    let world = World::new(&nc);
    world.create_ready(3).await;
    for (code, reason) in [(403, "Forbidden"), (500, "InternalError")] {
        let refusal = format!("cronjobs.batch \"demo-warm\": {reason}");
        world.api.refuse(&cronjob_path(), code, reason, &refusal);
        world.edit(|nc| nc["spec"]["warm"]["concurrency"] = (code / 100).into());
        let result = reconcile(Arc::new(world.current()), world.ctx.clone()).await;
        assert!(result.is_err(), "{code}: the reconcile fails, to be tried again");
        let nc = world.current();
        let status = nc.status.as_ref().unwrap();
        assert_ne!(status.observed_generation, nc.metadata.generation, "{code}");
        let (_, reason, message) = world.condition("Degraded");
        assert_ne!(reason, "InvalidSpec", "{code}: {message}");
    }
    world.api.allow(&cronjob_path());
    world.reconcile().await;
    assert_eq!(args(&stored(&world))[4], "5", "applied once allowed");
    assert_eq!(world.condition("Degraded").0, "False");
}

#[tokio::test]
async fn without_the_cronjob_api_warm_up_is_reported_as_not_applied() {
    let nc = fixtures::scaled("demo").with_warm("30 4 * * *", &[HELLO]);
    let world = World::new(&nc);
    world
        .ctx
        .set_capabilities(Capabilities::without([OptionalApi::CronJob]));
    world.reconcile().await;
    let job = world.unfinished_job();
    world.succeed_job(&job);
    let log = world.reconcile().await;
    assert!(
        !lines(&log).iter().any(|l| l.contains("/cronjobs")),
        "{:#?}",
        lines(&log)
    );
    let (status, reason, message) = world.condition("FeaturesAvailable");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "APINotServed"));
    assert!(message.contains("spec.warm is not applied"), "{message}");
}

#[tokio::test]
async fn a_missing_warm_credential_is_reported_and_the_cronjob_applied() {
    let mut nc = fixtures::scaled("demo").with_warm("30 4 * * *", &[HELLO]);
    nc.spec.warm.as_mut().unwrap().credential_secret_ref = Some(nixcache_crds::SecretKeyRef {
        name: "warm-credential".into(),
        key: None,
    });
    let world = World::new(&nc);
    world.create_ready(3).await;
    assert!(args(&stored(&world)).to_string().contains("--auth-file"));
    let (status, reason, message) = world.condition("Degraded");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "InvalidSpec"),
        "{message}"
    );
    assert!(
        message.starts_with("spec.warm.credentialSecretRef: Secret default/warm-credential does not exist"),
        "{message}"
    );
    // Still reported while a migration holds the children back: Degraded does not flap.
    world.edit(|nc| nc["spec"]["image"] = "registry.test/nixcache:2.0".into());
    world.reconcile().await;
    assert_eq!(world.condition("Progressing").1, "Migrating");
    assert_eq!(world.condition("Degraded").0, "True");
    let job = world.unfinished_job();
    world.succeed_job(&job);
    world.reconcile().await;
    assert_eq!(world.condition("Degraded").0, "True");
    // The wrong key, then the right one.
    let path = format!("{}/secrets/warm-credential", common::world::NS);
    world
        .api
        .insert(&path, common::world::secret("warm-credential", &[("token", "x")]));
    world.reconcile().await;
    let (_, _, message) = world.condition("Degraded");
    assert!(message.contains("has no key credential"), "{message}");
    world.api.insert(
        &path,
        common::world::secret("warm-credential", &[("credential", "ci:pw")]),
    );
    world.reconcile().await;
    assert_eq!(world.condition("Degraded").0, "False");
}
