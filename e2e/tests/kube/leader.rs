//! Leader election between operator replicas on a real API server: a clean handover on SIGTERM,
//! a takeover after SIGKILL, a leader cut off from the API server steps down before a standby
//! takes over, and a standby whose clock runs 20 s ahead never takes the Lease from a healthy
//! leader. Each new leader then really reconciles (a scale the previous leader never saw).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use nixcache_e2e::kube::relay::TcpRelay;
use nixcache_e2e::kube::wait;

use crate::world::World;
use crate::ONE_AT_A_TIME;

const NAME: &str = "lead";
const READY: Duration = Duration::from_secs(180);

/// The operators run with `--lease-duration 6s --renew-deadline 4s --retry-period 1s`.
const LEASE: Duration = Duration::from_secs(6);

async fn wait_leader(world: &World, identity: &str, timeout: Duration) -> Result<Duration> {
    let t0 = Instant::now();
    wait::until(&format!("{identity} leads"), timeout, || async {
        Ok((world.leader()? == identity).then_some(()))
    })
    .await
    .with_context(|| world.describe(NAME))?;
    Ok(t0.elapsed())
}

/// Scales the NixCache and waits until the replicas follow: only a leader reconciles.
async fn scaled_by_the_leader(world: &mut World, replicas: i64) -> Result<()> {
    world
        .ns
        .kubectl(&["scale", "nixcache", NAME, &format!("--replicas={replicas}")])?;
    world.wait_ready(NAME, replicas, READY).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_moves_on_sigterm_sigkill_and_partition_but_not_on_a_skewed_clock() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut world) = World::start("kube-lead").await? else {
        return Ok(());
    };
    let api: SocketAddr = world
        .plane()
        .var("KUBE_API_SERVER")?
        .trim_start_matches("https://")
        .parse()?;
    let relay = TcpRelay::start(api).await?;
    let via_relay = world
        .ns
        .operator_kubeconfig_via(&format!("https://{}", relay.addr), "relay.kubeconfig")?;
    let a = world.start_operator_with("operator-a", None, via_relay).await?;
    wait_leader(&world, "operator-a", Duration::from_secs(20)).await?;
    world.ns.apply(&world.nixcache_yaml(NAME, 1, ""))?;
    world.wait_ready(NAME, 1, READY).await?;

    // A standby whose clock runs 20 s ahead: the leader's renewTime looks 20 s old to it, yet
    // the record keeps changing, so it must keep waiting.
    let skewed = world.start_operator("operator-skewed", Some("+20s")).await?;
    let ahead = clock_ahead(&world.operators[skewed].log()).context("no timestamp in its log")?;
    ensure!(ahead >= 15, "the skewed operator's clock is only {ahead} s ahead");
    tokio::time::sleep(LEASE * 3).await;
    ensure!(
        world.leader()? == "operator-a",
        "the skewed standby took the Lease from a healthy leader:\n{}",
        world.operators[skewed].log_tail(20)
    );
    world.operators[skewed].signal("TERM")?;
    world.operators[skewed].wait_exit(Duration::from_secs(20)).await?;

    // Partition: operator-a's connection to the API server freezes mid-renew. It must step down
    // within its renew deadline, before operator-b can take the Lease (after a lease duration).
    let b = world.start_operator("operator-b", None).await?;
    relay.freeze();
    let cut = Instant::now();
    // Watch both at once: when operator-a exits, and when operator-b holds the Lease.
    let (mut a_exit, mut b_led) = (None, None);
    while b_led.is_none() || a_exit.is_none() {
        ensure!(
            cut.elapsed() < LEASE * 4,
            "no handover within {:?}:\n{}",
            LEASE * 4,
            world.describe(NAME)
        );
        if a_exit.is_none() && !world.operators[a].running() {
            a_exit = Some(cut.elapsed());
        }
        if b_led.is_none() && world.leader()? == "operator-b" {
            b_led = Some(cut.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (stepped_down_after, took) = (a_exit.unwrap_or_default(), b_led.unwrap_or_default());
    let exited = world.operators[a].wait_exit(Duration::from_secs(5)).await?;
    ensure!(
        !exited.success(),
        "a leader that lost the Lease exits with an error (to be restarted)"
    );
    ensure!(
        stepped_down_after <= took,
        "operator-b led {took:?} after the cut, before operator-a stepped down ({stepped_down_after:?})"
    );
    ensure!(
        took >= LEASE - Duration::from_secs(1),
        "operator-b took the Lease {took:?} after the cut, before it could have expired"
    );
    let log_a = world.operators[a].log();
    ensure!(
        log_a.contains("lost the leader lease"),
        "operator-a did not say it lost the Lease:\n{}",
        world.operators[a].log_tail(20)
    );
    eprintln!("[kube] partitioned leader exited after {stepped_down_after:?}; operator-b led after {took:?}");
    relay.thaw();
    scaled_by_the_leader(&mut world, 2).await?;

    // SIGTERM: operator-b releases the Lease on its way out, so operator-c leads at once.
    let c = world.start_operator("operator-c", None).await?;
    world.operators[b].signal("TERM")?;
    let status = world.operators[b].wait_exit(Duration::from_secs(30)).await?;
    ensure!(status.success(), "SIGTERM ends the operator cleanly: {status}");
    let took = wait_leader(&world, "operator-c", LEASE * 2).await?;
    ensure!(
        took < LEASE,
        "operator-c took {took:?}: the Lease was not released on SIGTERM"
    );
    scaled_by_the_leader(&mut world, 1).await?;

    // SIGKILL: nothing is released; operator-d takes over once the Lease expired.
    let d = world.start_operator("operator-d", None).await?;
    world.operators[c].signal("KILL")?;
    let killed = Instant::now();
    wait_leader(&world, "operator-d", LEASE * 4).await?;
    ensure!(
        killed.elapsed() >= LEASE - Duration::from_secs(1),
        "operator-d led {:?} after the kill, before the Lease could expire",
        killed.elapsed()
    );
    scaled_by_the_leader(&mut world, 2).await?;
    let _ = d;
    Ok(())
}

/// How many seconds the first timestamp of a log (`2026-12-02T14:51:36.07Z …`) is ahead of
/// the real clock now (seconds of the day, UTC; the lines are seconds old at most).
fn clock_ahead(log: &str) -> Option<i64> {
    let time = log.lines().next()?.split('T').nth(1)?.get(..8)?;
    let mut parts = time.split(':').map(|p| p.parse::<i64>().ok());
    let logged = parts.next()?? * 3600 + parts.next()?? * 60 + parts.next()??;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64
        % 86_400;
    Some((logged - now).rem_euclid(86_400))
}
