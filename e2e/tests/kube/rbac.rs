//! What a missing RBAC grant does on a real API server. Defect 4: one watch that fails (here the
//! Service watch, 403) stalled every reconcile, was logged at debug only, and left `/readyz`
//! green. Defects 6 and 7: a failed reconcile reported nothing running (replicas 0, Ready False)
//! with a 14,000-character message, and events over 1,024 characters were refused. Now the spec
//! edits still land, `/readyz` says which watch fails, the status keeps what runs and says in one
//! line what failed, and a Warning event about it is accepted.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use nixcache_e2e::kube::wait;

use crate::world::{condition, World};
use crate::ONE_AT_A_TIME;

const NAME: &str = "rbac";
const READY: Duration = Duration::from_secs(180);
const SERVICE_RULE: &str = r#"resources: ["services"]
    verbs: ["list", "watch", "create", "patch"]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_grant_costs_only_what_needs_it_and_says_so() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut world) = World::start("kube-rbac").await? else {
        return Ok(());
    };
    // 1. No list/watch of Services from the start (an established watch would only fail at
    //    its next reconnect): that watch fails, nothing else does.
    world.ns.apply_rbac_with(|yaml| {
        yaml.replace(
            SERVICE_RULE,
            r#"resources: ["services"]
    verbs: ["create", "patch"]"#,
        )
    })?;
    let op = world.start_operator("operator-a", None).await?;
    world.ns.apply(&world.nixcache_yaml(NAME, 2, ""))?;
    world.wait_ready(NAME, 2, READY).await?;
    let edit = std::time::Instant::now();
    world.ns.kubectl(&["scale", "nixcache", NAME, "--replicas=3"])?;
    world
        .wait_ready(NAME, 3, READY)
        .await
        .context("a spec edit with a failing watch")?;
    ensure!(
        edit.elapsed() < Duration::from_secs(60),
        "the scale took {:?} with one watch failing",
        edit.elapsed()
    );
    let operator = &world.operators[op];
    let (code, body) = wait::until(
        "/readyz reports the failing watch",
        Duration::from_secs(120),
        || async {
            let (code, body) = operator.get("/readyz").await?;
            Ok((code == 503).then_some((code, body)))
        },
    )
    .await
    .with_context(|| world.describe(NAME))?;
    ensure!(
        body.to_lowercase().contains("service"),
        "/readyz {code} does not name the watch: {body}"
    );
    let log = operator.log();
    ensure!(
        log.lines()
            .any(|l| l.contains("WARN") && l.to_lowercase().contains("service") && l.contains("403")),
        "the failing watch was not logged at warn:\n{}",
        operator.log_tail(30)
    );
    let (health, _) = operator.get("/healthz").await?;
    ensure!(
        health == 200,
        "/healthz {health}: a restart cannot fix a missing grant"
    );

    // 2. No patch of Services either: the reconcile itself fails at its first step.
    world.ns.apply_rbac_with(|yaml| {
        yaml.replace(
            SERVICE_RULE,
            r#"resources: ["services"]
    verbs: ["create"]"#,
        )
    })?;
    world.ns.kubectl(&[
        "patch",
        "nixcache",
        NAME,
        "--type=merge",
        "-p",
        r#"{"spec":{"podAnnotations":{"touched":"1"}}}"#,
    ])?;
    let ns = &world.ns;
    let nc = world.wait_degraded(NAME, "True", Some("KubeForbidden")).await?;
    let degraded = condition(&nc, "Degraded").cloned().unwrap_or_default();
    let message = degraded["message"].as_str().unwrap_or_default();
    ensure!(
        !message.contains('\n') && message.len() <= 400 && message.contains("services"),
        "Degraded should say in one short line what failed ({} bytes): {message}",
        message.len()
    );
    ensure!(
        nc["status"]["readyReplicas"].as_i64() == Some(3) && nc["status"]["replicas"].as_i64() == Some(3),
        "a failed reconcile reported {} of {} replicas while 3 run",
        nc["status"]["readyReplicas"],
        nc["status"]["replicas"]
    );
    let ready = condition(&nc, "Ready").cloned().unwrap_or_default();
    ensure!(
        ready["status"] == "True",
        "Ready went {} while 3 replicas serve",
        ready["status"]
    );
    let events = ns.kubectl(&["get", "events", "--field-selector", "type=Warning", "-o", "json"])?;
    ensure!(
        events.contains("KubeForbidden"),
        "no Warning event about the refused request was accepted: {events}"
    );

    // 3. The grants back: healthy again.
    world.ns.apply_rbac_with(|yaml| yaml)?;
    world.wait_degraded(NAME, "False", None).await?;
    wait::until("/readyz is 200 again", Duration::from_secs(90), || async {
        Ok((world.operators[op].get("/readyz").await?.0 == 200).then_some(()))
    })
    .await?;
    Ok(())
}
