//! Defect 10: a change of the data claim that the API server refuses (here a smaller size)
//! blocked the migration and the Deployment on every reconcile. Now it is reported as a condition
//! and the rest of the spec goes ahead. One replica with SQLite on a volume, as
//! `examples/single-sqlite-pvc.yaml`.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use nixcache_e2e::kube::wait;

use crate::world::{condition, World};
use crate::ONE_AT_A_TIME;

const NAME: &str = "claim";
const READY: Duration = Duration::from_secs(180);

fn on_a_claim(world: &World, size: &str, annotation: &str) -> String {
    format!(
        "apiVersion: nixcache.dev/v1alpha1\nkind: NixCache\nmetadata:\n  name: {NAME}\nspec:\n  replicas: 1\n  \
         upstreams:\n  - url: {upstream}\n    publicKeys: [\"{key}\"]\n  storage:\n    persistentVolumeClaim:\n      \
         size: {size}\n  database:\n    sqlite: {{}}\n  podAnnotations:\n    edited: \"{annotation}\"\n",
        upstream = world.upstream.url,
        key = world.cache.public_key,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_claim_change_is_reported_and_the_rest_goes_on() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut world) = World::start("kube-claim").await? else {
        return Ok(());
    };
    world.start_operator("operator-a", None).await?;
    world.ns.apply(&on_a_claim(&world, "1Gi", "first"))?;
    world.wait_ready(NAME, 1, READY).await?;

    // The API server refuses the smaller claim (422); the annotation must still roll the pod.
    world.ns.apply(&on_a_claim(&world, "512Mi", "second"))?;
    let ns = &world.ns;
    let nc = world
        .wait_degraded(NAME, "True", Some("VolumeClaimNotUpdated"))
        .await?;
    let message = condition(&nc, "Degraded")
        .map(|c| c["message"].to_string())
        .unwrap_or_default();
    ensure!(
        message.contains(&format!("{NAME}-data")),
        "the condition does not name the claim: {message}"
    );
    wait::until("the Deployment still moves", READY, || async {
        let deployment = ns.get_json(&["deployment", NAME])?.context("no Deployment")?;
        Ok((deployment["spec"]["template"]["metadata"]["annotations"]["edited"] == "second").then_some(()))
    })
    .await
    .with_context(|| world.describe(NAME))?;
    let claim = ns
        .get_json(&["pvc", &format!("{NAME}-data")])?
        .context("no claim")?;
    ensure!(
        claim["spec"]["resources"]["requests"]["storage"] == "1Gi",
        "the claim changed: {}",
        claim["spec"]["resources"]
    );

    // Back to the size it has: nothing is refused any more.
    world.ns.apply(&on_a_claim(&world, "1Gi", "second"))?;
    world.wait_degraded(NAME, "False", None).await?;
    world.wait_ready(NAME, 1, READY).await?;
    Ok(())
}
