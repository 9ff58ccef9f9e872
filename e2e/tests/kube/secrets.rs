//! Defect 8: the operator watched every Secret in full, so a namespace (or cluster) full of large
//! Secrets, such as Helm's release Secrets, was held in its memory. It must watch their metadata
//! only (it reads the few it needs with a GET), yet still react to a change of one a NixCache
//! names.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use base64::Engine as _;

use crate::world::World;
use crate::ONE_AT_A_TIME;

const NAME: &str = "mem";
/// 60 Secrets of 700 KiB each: 41 MiB of data the operator has no use for.
const SECRETS: usize = 60;
const SECRET_BYTES: usize = 700 * 1024;

/// The operator's resident memory (`VmRSS`) in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

fn big_secrets() -> String {
    let mut bytes = vec![0u8; SECRET_BYTES];
    let mut yaml = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for i in 0..SECRETS {
        // Different content each, so nothing deduplicates.
        for (j, b) in bytes.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(j as u8);
        }
        let value = base64::engine::general_purpose::STANDARD.encode(&bytes);
        yaml.push_str(&format!(
            "- apiVersion: v1\n  kind: Secret\n  metadata: {{name: helm-release-{i}}}\n  data: {{release: {value}}}\n"
        ));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_large_secrets_stay_out_of_the_operators_memory() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut world) = World::start("kube-mem").await? else {
        return Ok(());
    };
    let op = world.start_operator("operator-a", None).await?;
    world.ns.apply(&world.nixcache_yaml(NAME, 1, ""))?;
    world.wait_ready(NAME, 1, Duration::from_secs(180)).await?;
    let pid = world.operators[op].pid().context("operator not running")?;
    let before = rss_kib(pid)?;

    world.ns.kubectl_stdin(&["create", "-f", "-"], &big_secrets())?;
    // The watch delivers them; give it time to, then let a restart list them all at once too.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after_watch = rss_kib(pid)?;
    world.operators[op].signal("TERM")?;
    world.operators[op].wait_exit(Duration::from_secs(30)).await?;
    let op = world.start_operator("operator-b", None).await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after_list = rss_kib(world.operators[op].pid().context("operator not running")?)?;
    let data_kib = (SECRETS * SECRET_BYTES / 1024) as u64;
    eprintln!(
        "[kube] operator RSS: {before} KiB before, {after_watch} KiB after {SECRETS} Secrets ({data_kib} KiB) were watched, {after_list} KiB after a restart listed them"
    );
    for (what, rss) in [("watching", after_watch), ("listing", after_list)] {
        ensure!(
            rss < before + data_kib / 4,
            "the operator's memory grew to {rss} KiB (from {before} KiB) {what} {data_kib} KiB of Secrets it does not use"
        );
    }

    // It still reacts to a change of a Secret the NixCache names: the same database under a
    // new URL (an application_name) rolls the pods through a new migration Job.
    let before_hash = pod_template_hash(&world)?;
    let url = format!("{}?application_name=rotated", world._db.url());
    let patch = serde_json::json!({"stringData": {"url": url}}).to_string();
    world
        .ns
        .kubectl(&["patch", "secret", "db", "--type=merge", "-p", &patch])?;
    let ns = &world.ns;
    nixcache_e2e::kube::wait::until(
        "the pods roll after the Secret changed",
        Duration::from_secs(120),
        || async { Ok((pod_template_hash_in(ns)? != before_hash).then_some(())) },
    )
    .await
    .with_context(|| world.describe(NAME))?;
    world.wait_ready(NAME, 1, Duration::from_secs(180)).await?;
    Ok(())
}

fn pod_template_hash(world: &World) -> Result<String> {
    pod_template_hash_in(&world.ns)
}

fn pod_template_hash_in(ns: &nixcache_e2e::kube::TestNamespace) -> Result<String> {
    let deployment = ns.get_json(&["deployment", NAME])?.context("no Deployment")?;
    Ok(deployment["spec"]["template"]["metadata"]["annotations"]["nixcache.dev/secrets-hash"].to_string())
}
