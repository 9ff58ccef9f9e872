//! Warm-up (`spec.warm`) on a real API server, a phase of the lifecycle scenario: the CRD's
//! schema refuses a path that is not a store path, naming it; a name Nix reserves, which the
//! schema lets through, is reported by the operator (`Degraded=True, InvalidSpec`, only a
//! warning) while the replicas serve on; the warm-up CronJob follows the section (created,
//! updated, deleted, and a schedule the API server refuses reported the same way) where
//! `batch/v1` CronJob is served, and where it is not (1.20) `FeaturesAvailable` says that
//! `spec.warm` is not applied, until the section is removed.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use nixcache_e2e::kube::wait;
use serde_json::Value;

use crate::lifecycle::served;
use crate::world::{condition, World};

const CHANGE: Duration = Duration::from_secs(120);
/// Not a store path: the schema's pattern refuses it.
const NOT_A_STORE_PATH: &str = "/nix/store/not-a-store-path";
/// A name Nix reserves (`.-*`): the pattern accepts it, the operator does not.
const RESERVED: &str = "/nix/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4-.-x";

/// The spec lines of a `warm` section (under `base`, the rest of the spec's extra lines).
fn with_warm(base: &str, schedule: &str, paths: &[&str]) -> String {
    let paths: Vec<String> = paths.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "{base}  warm:\n    schedule: \"{schedule}\"\n    paths: [{}]\n",
        paths.join(", ")
    )
}

/// Runs the phase on the NixCache `name`, whose spec's extra lines are `base`; leaves it with
/// `base` again.
pub async fn warm_up_follows_the_spec(world: &World, name: &str, base: &str) -> Result<()> {
    refused_by_the_schema(world, name, base)?;
    let root = world.cache.root.clone();
    let others: Vec<&str> = world.cache.paths.iter().map(String::as_str).take(2).collect();
    world
        .ns
        .apply(&world.nixcache_yaml(name, 3, &with_warm(base, "30 4 * * *", &[&root])))?;
    let cronjobs = served(world, "batch/v1", "cronjobs")?;
    if cronjobs {
        wait_for_cronjob(world, name, "30 4 * * *", &[&root]).await?;
        world
            .ns
            .apply(&world.nixcache_yaml(name, 3, &with_warm(base, "0 5 * * 1", &others)))?;
        wait_for_cronjob(world, name, "0 5 * * 1", &others).await?;
        schedule_refused_by_the_api_server(world, name, base, &others).await?;
    } else {
        wait_for_features(world, name, "APINotServed", "spec.warm is not applied").await?;
    }
    reported_by_the_operator(world, name, base).await?;

    world.ns.apply(&world.nixcache_yaml(name, 3, base))?;
    world.wait_degraded(name, "False", None).await?;
    if cronjobs {
        let ns = &world.ns;
        let cronjob = format!("{name}-warm");
        wait::until("the warm-up CronJob is deleted", CHANGE, || async {
            Ok(ns.get_json(&["cronjob", &cronjob])?.is_none().then_some(()))
        })
        .await?;
    } else {
        wait_for_features(world, name, "GarbageCollectionInProcess", "spec.gc").await?;
        eprintln!(
            "SKIP kube: batch/v1 CronJob is not served by kube-apiserver {} (Kubernetes 1.21+): the \
             warm-up CronJob's create, update, delete and refused schedule are checked against the \
             scripted API server (operator/tests/warm_cronjob.rs)",
            world.plane().version()
        );
    }
    Ok(())
}

/// The CRD's pattern refuses a path that is not a store path, naming the entry.
fn refused_by_the_schema(world: &World, name: &str, base: &str) -> Result<()> {
    let yaml = world.nixcache_yaml(name, 3, &with_warm(base, "30 4 * * *", &[NOT_A_STORE_PATH]));
    let refused = world.ns.apply(&yaml).err();
    let message = format!(
        "{:#}",
        refused.context("a path that is no store path was accepted")?
    );
    ensure!(
        message.contains("spec.warm.paths[0]") && message.contains("should match"),
        "the refusal does not name the path: {message}"
    );
    Ok(())
}

/// A name Nix reserves passes the schema; the operator reports it while the replicas serve on.
async fn reported_by_the_operator(world: &World, name: &str, base: &str) -> Result<()> {
    world
        .ns
        .apply(&world.nixcache_yaml(name, 3, &with_warm(base, "30 4 * * *", &[RESERVED])))?;
    let nc = wait_for_warning(world, name, "spec.warm.paths[0]").await?;
    let degraded = condition(&nc, "Degraded").cloned().unwrap_or_default();
    ensure!(
        degraded["message"]
            .as_str()
            .is_some_and(|m| m.contains("is not allowed")),
        "the condition does not say what is wrong: {degraded}"
    );
    Ok(())
}

/// A schedule out of range passes the schema (it cannot parse cron syntax); the API server
/// refuses the CronJob, and the operator reports that while the replicas serve on and the old
/// CronJob stays.
async fn schedule_refused_by_the_api_server(
    world: &World,
    name: &str,
    base: &str,
    paths: &[&str],
) -> Result<()> {
    world
        .ns
        .apply(&world.nixcache_yaml(name, 3, &with_warm(base, "61 * * * *", paths)))?;
    let nc = wait_for_warning(world, name, "spec.warm.schedule: the API server refused").await?;
    let degraded = condition(&nc, "Degraded").cloned().unwrap_or_default();
    ensure!(
        degraded["message"].as_str().is_some_and(|m| m.contains("61")),
        "the condition does not quote the API server: {degraded}"
    );
    wait_for_cronjob(world, name, "0 5 * * 1", paths).await
}

/// Waits until `Degraded=True, InvalidSpec` says `prefix` first, and checks that it is only a
/// warning: the generation observed, Ready, Progressing not stopped by it.
async fn wait_for_warning(world: &World, name: &str, prefix: &str) -> Result<Value> {
    let what = format!("Degraded=True InvalidSpec saying {prefix:?}");
    let nc = wait::until(&what, CHANGE, || async {
        let nc = world.nixcache(name)?;
        let degraded = condition(&nc, "Degraded").cloned().unwrap_or_default();
        let done = degraded["status"] == "True"
            && degraded["reason"] == "InvalidSpec"
            && degraded["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(prefix));
        Ok(done.then_some(nc))
    })
    .await
    .with_context(|| world.describe(name))?;
    let ready = condition(&nc, "Ready").cloned().unwrap_or_default();
    ensure!(ready["status"] == "True", "the cache stopped serving: {ready}");
    let progressing = condition(&nc, "Progressing").cloned().unwrap_or_default();
    ensure!(
        progressing["reason"] != "InvalidSpec",
        "a warm-up problem stopped Progressing: {progressing}"
    );
    ensure!(
        nc["status"]["observedGeneration"] == nc["metadata"]["generation"],
        "the generation is not observed: {}",
        nc["status"]
    );
    Ok(nc)
}

/// Waits until `<name>-warm` runs `nixcache warm` on `paths` against the Service, on `schedule`.
async fn wait_for_cronjob(world: &World, name: &str, schedule: &str, paths: &[&str]) -> Result<()> {
    let ns = &world.ns;
    let cronjob = format!("{name}-warm");
    let url = format!("http://{name}.{}.svc:8501", ns.name);
    let mut wanted = vec![Value::from("warm"), "--url".into(), url.into()];
    wanted.extend(paths.iter().map(|p| Value::from(*p)));
    let wanted = Value::Array(wanted);
    let what = format!("CronJob {cronjob} on {schedule} warms {paths:?}");
    wait::until(&what, CHANGE, || async {
        let Some(found) = ns.get_json(&["cronjob", &cronjob])? else {
            return Ok(None);
        };
        let spec = &found["spec"];
        let args = &spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"];
        let owner = &found["metadata"]["ownerReferences"][0];
        let done = *args == wanted && spec["schedule"] == schedule && owner["kind"] == "NixCache";
        Ok(done.then_some(()))
    })
    .await
    .with_context(|| world.describe(name))
}

/// Waits until `FeaturesAvailable` has `reason` and its message contains `says`.
async fn wait_for_features(world: &World, name: &str, reason: &str, says: &str) -> Result<()> {
    let what = format!("FeaturesAvailable {reason} saying {says:?}");
    wait::until(&what, CHANGE, || async {
        let nc = world.nixcache(name)?;
        let features = condition(&nc, "FeaturesAvailable").cloned().unwrap_or_default();
        let done =
            features["reason"] == reason && features["message"].as_str().is_some_and(|m| m.contains(says));
        Ok(done.then_some(()))
    })
    .await
    .with_context(|| world.describe(name))
}
