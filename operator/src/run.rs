//! The operator process: admin server, leader election, API discovery, controller, graceful
//! shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cache_status;
use crate::capabilities::{self, Capabilities};
use crate::context::Context;
use crate::controller::{self, Scope};
use crate::leader::{LeaderElector, LeaseConfig};
use crate::{admin, Error, Result};

/// How the process runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub admin_listen: SocketAddr,
    /// Where to watch NixCaches.
    pub scope: Scope,
    /// Leader election; `None` runs without (one replica only!).
    pub leader_election: Option<LeaseConfig>,
    /// How often the leader reads the replicas' `/status` into `status.cache`; `None`: never.
    pub cache_status: Option<cache_status::Options>,
}

/// How often the leader asks the API server again which optional APIs it serves (the controller
/// restarts when that changed, e.g. after a cluster upgrade).
const REDISCOVERY_INTERVAL: Duration = Duration::from_secs(600);
/// Longest pause between failed discoveries at start.
const MAX_DISCOVERY_RETRY: Duration = Duration::from_secs(30);

/// Runs until `shutdown` is cancelled (SIGTERM) or leadership is lost (an error: the process
/// should exit and be restarted, as client-go controllers do). A lost Lease stops the
/// controller at once: reconciliations under way are dropped at their next request, before a
/// standby can have taken over.
pub async fn run(ctx: Arc<Context>, options: RunOptions, shutdown: CancellationToken) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(options.admin_listen)
        .await
        .map_err(|source| Error::AdminServer {
            addr: options.admin_listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(options.admin_listen);
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    let server_stop = shutdown.clone();
    let router = admin::router(ctx.metrics.clone(), ctx.health.clone());
    let server =
        axum::serve(listener, router).with_graceful_shutdown(async move { server_stop.cancelled().await });
    let server = tokio::spawn(async move { server.await });

    let elector = options
        .leader_election
        .clone()
        .map(|c| LeaderElector::new(ctx.client.clone(), c));
    if let Some(elector) = &elector {
        tokio::select! {
            () = elector.acquire() => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        ctx.metrics.leader.set(1);
    }
    let controller = lead(ctx.clone(), &options, shutdown.clone());
    let result = match &elector {
        Some(elector) => tokio::select! {
            () = controller => Ok(()),
            lost = elector.hold() => Err(lost),
        },
        None => {
            controller.await;
            Ok(())
        }
    };
    ctx.metrics.leader.set(0);
    ctx.metrics.set_replicas(&[]);
    if result.is_ok() {
        if let Some(elector) = &elector {
            elector.release().await;
        }
    }
    shutdown.cancel();
    let _ = server.await;
    tracing::info!("stopped");
    result
}

/// What the leader runs: the controller and, beside it, the cache status poller, both until
/// `shutdown` (or until the future is dropped, when the Lease is lost).
async fn lead(ctx: Arc<Context>, options: &RunOptions, shutdown: CancellationToken) {
    let controller = control(ctx.clone(), options.scope.clone(), shutdown.clone());
    let Some(poll) = options.cache_status.filter(|o| !o.interval.is_zero()) else {
        return controller.await;
    };
    let poller = cache_status::run(ctx, options.scope.clone(), poll, shutdown);
    tokio::join!(controller, poller);
}

/// Discovers the cluster's optional APIs and runs the controller for them, until `shutdown`;
/// starts it again (gracefully) when a later discovery finds them changed.
async fn control(ctx: Arc<Context>, scope: Scope, shutdown: CancellationToken) {
    ctx.health.controller_started();
    loop {
        let Some(found) = discover_until_done(&ctx, &shutdown).await else {
            return;
        };
        for api in found.unserved() {
            tracing::warn!(
                api = api.group_version(),
                kind = api.kind(),
                since = api.since(),
                "this cluster does not serve the API; the feature behind it is off (see the NixCaches' \
                 FeaturesAvailable condition)"
            );
        }
        ctx.set_capabilities(found.clone());
        let restart = shutdown.child_token();
        let stop = restart.clone();
        let controller = controller::run(ctx.clone(), scope.clone(), async move { stop.cancelled().await });
        let rediscovery = async {
            rediscover(ctx.client.clone(), found, restart).await;
            // The controller finishes its reconciliations, then the select ends.
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = controller => {}
            () = rediscovery => {}
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}

/// How API discovery is named in `/readyz` while it fails.
const DISCOVERY: &str = "API discovery";

/// Discovery, retried with a growing pause until it answers; `None` on shutdown.
async fn discover_until_done(ctx: &Context, shutdown: &CancellationToken) -> Option<Capabilities> {
    let mut pause = Duration::from_secs(1);
    loop {
        match capabilities::discover(&ctx.client).await {
            Ok(found) => {
                ctx.health.watch_ok(DISCOVERY, true, Instant::now());
                return Some(found);
            }
            Err(error) => {
                // Counted like a failing watch, so /readyz says why nothing is reconciled.
                ctx.health
                    .watch_failed(DISCOVERY, &error.to_string(), Instant::now());
                tracing::warn!(%error, retry_in = ?pause, "API discovery failed")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => return None,
        }
        pause = (pause * 2).min(MAX_DISCOVERY_RETRY);
    }
}

/// Cancels `restart` once discovery finds other APIs than `current`.
async fn rediscover(client: kube::Client, current: Capabilities, restart: CancellationToken) {
    let found = capabilities::changed(&client, &current, REDISCOVERY_INTERVAL).await;
    tracing::info!(before = ?current, now = ?found, "the cluster's APIs changed; restarting the controller");
    restart.cancel();
}

/// A token cancelled on SIGTERM or Ctrl-C.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    cancel.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down: finishing reconciliations under way");
        cancel.cancel();
    });
    token
}
