//! The operator process: admin server, leader election, controller, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

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
}

/// Runs until `shutdown` is cancelled (SIGTERM) or leadership is lost (an error: the process
/// should exit and be restarted, as client-go controllers do).
pub async fn run(ctx: Arc<Context>, options: RunOptions, shutdown: CancellationToken) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(options.admin_listen)
        .await
        .map_err(|source| Error::AdminServer {
            addr: options.admin_listen.to_string(),
            source,
        })?;
    tracing::info!(addr = %options.admin_listen, "serving /metrics, /healthz and /readyz");
    let server_stop = shutdown.clone();
    let server = axum::serve(listener, admin::router(ctx.metrics.clone()))
        .with_graceful_shutdown(async move { server_stop.cancelled().await });
    let server = tokio::spawn(async move { server.await });

    let elector = options
        .leader_election
        .map(|c| LeaderElector::new(ctx.client.clone(), c));
    if let Some(elector) = &elector {
        tokio::select! {
            () = elector.acquire() => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        ctx.metrics.leader.set(1);
    }
    let stop = shutdown.clone();
    let controller = controller::run(ctx.clone(), options.scope, async move { stop.cancelled().await });
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
