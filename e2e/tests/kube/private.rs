//! `spec.private` on a real API server: the operator mounts the readers Secret into every replica
//! and passes `--read-credentials-file`; the replicas still become ready (the probes ask what
//! stays open), a Nix client without a netrc gets 401 through the Service, and one whose netrc
//! holds a reader's password substitutes the closure.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use nixcache_e2e::{fetch, FetchOptions};

use crate::world::World;
use crate::ONE_AT_A_TIME;

const NAME: &str = "private";
// No blank in the password: a netrc splits its tokens on them.
const READER: (&str, &str) = ("laptop", "s3cret-reader");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_private_nixcache_serves_only_clients_with_a_netrc() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut world) = World::start("kube-private").await? else {
        return Ok(());
    };
    world.start_operator("operator-a", None).await?;
    let (user, password) = READER;
    let readers = format!("{user}:{}\n", bcrypt::hash(password, 6)?);
    world.ns.secret("readers", &[("credentials", &readers)])?;
    let private = "  private:\n    credentialsSecretRef: {name: readers}\n";
    world.ns.apply(&world.nixcache_yaml(NAME, 2, private))?;
    let nc = world.wait_ready(NAME, 2, Duration::from_secs(240)).await?;
    let public_key = nc["status"]["publicKey"]
        .as_str()
        .context("no status.publicKey")?
        .to_owned();
    let service = world.service(NAME).await?;
    // Through the Service: refused without a credential, served with one.
    let url = format!("{}/nix-cache-info", service.url);
    let client = reqwest::Client::new();
    let refused = client.get(&url).send().await?;
    ensure!(
        refused.status() == reqwest::StatusCode::UNAUTHORIZED
            && refused.headers().contains_key(reqwest::header::WWW_AUTHENTICATE),
        "without a credential: {refused:?}"
    );
    let served = client.get(&url).basic_auth(user, Some(password)).send().await?;
    ensure!(
        served.status() == reqwest::StatusCode::OK,
        "with a reader's: {served:?}"
    );

    let refused = fetch(
        &service.url,
        &public_key,
        &[&world.cache.root],
        &FetchOptions::default(),
    )
    .await;
    let said = match refused {
        Ok(outcome @ nixcache_e2e::ClientOutcome::Ok { .. }) => {
            anyhow::bail!("served without a netrc: {outcome:?}")
        }
        Ok(outcome) => format!("{outcome:?}"),
        Err(err) => format!("{err:#}"),
    };
    // Nix 2.8 (the default client) says only that it "does not appear to be a binary cache"
    // (the 401 itself is checked above).
    ensure!(
        said.contains("401") || said.contains("does not appear to be a binary cache"),
        "without a netrc: expected a refusal, got: {said}"
    );

    let work = tempfile::tempdir()?;
    let netrc = work.path().join("netrc");
    std::fs::write(
        &netrc,
        format!("machine 127.0.0.1 login {user} password {password}\n"),
    )?;
    let opts = FetchOptions {
        netrc: Some(netrc),
        ..FetchOptions::default()
    };
    fetch(&service.url, &public_key, &[&world.cache.root], &opts)
        .await
        .with_context(|| world.describe(NAME))?
        .expect_whole_closure(&world.cache)
}
