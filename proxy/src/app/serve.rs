//! `nixcache serve`: listen, serve until a shutdown signal, then drain in order.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::build_state;
use crate::{cache::Cache, cli::ServeArgs, http, scratch, warm::jobs::WarmJobs};

/// How long a stopping process tries to write the access times it holds.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);
/// How long start-up waits for the first probe of the upstreams' nix-cache-info.
const INITIAL_PROBE_WAIT: Duration = Duration::from_secs(2);

/// Runs `nixcache serve` until a shutdown signal, then drains (see [`drain`]).
pub async fn serve(mut args: ServeArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // With port 0, other replicas must learn the port actually bound.
    args.listen = listener.local_addr()?;
    let metrics_listener = bind_metrics(args.access.metrics_listen).await?;
    let state = build_state(&args).await?;
    let cache = state.cache.clone();
    // Learn the upstreams' priorities and health before the first lookup, but never wait long
    // for a dead one; then probe them on a schedule.
    let _ = tokio::time::timeout(INITIAL_PROBE_WAIT, cache.upstreams().probe()).await;
    let (prober, every) = (cache.clone(), args.upstream_probe_interval);
    cache
        .background()
        .spawn("upstream_probes", move |stop| async move {
            while stop.pause(every).await {
                prober.upstreams().probe().await;
            }
        });
    tracing::info!(listen = %args.listen, data_dir = %args.backend.data_dir.display(), "nixcache serving");
    let stop = CancellationToken::new();
    let limits = http::server::ServerLimits::from(&args.connections);
    let server = http::server::serve(
        listener,
        http::router(state.clone()),
        limits,
        Arc::clone(cache.metrics()),
        stop.clone().cancelled_owned(),
    );
    let mut server = tokio::spawn(server);
    let metrics_server = metrics_listener.map(|listener| serve_metrics(listener, &state, limits, &stop));
    tokio::select! {
        result = &mut server => {
            result?;
            anyhow::bail!("the server stopped without a shutdown signal");
        }
        () = shutdown_signal() => {}
    }
    // Not ready from now on; new connections are still taken for --shutdown-delay, while the
    // load balancer (a Kubernetes Service's endpoints) learns to send them elsewhere.
    state.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    if !args.shutdown_delay.is_zero() {
        tracing::info!(delay = ?args.shutdown_delay, "shutdown signal: not ready; still serving for the delay");
        tokio::time::sleep(args.shutdown_delay).await;
    }
    stop.cancel();
    drain(&cache, state.writes.warm.as_ref(), server, args.shutdown_grace).await;
    stop_metrics(metrics_server).await;
    Ok(())
}

/// The `--metrics-listen` listener, bound before anything else starts (a bad address fails now).
async fn bind_metrics(addr: Option<std::net::SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--metrics-listen)"))?;
    Ok(Some(listener))
}

/// Serves `/metrics` on its own listener until `stop`.
fn serve_metrics(
    listener: TcpListener,
    state: &http::AppState,
    limits: http::server::ServerLimits,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tracing::info!(metrics_listen = ?listener.local_addr().ok(), "serving /metrics there");
    let router = http::metrics_router(state.clone());
    let metrics = Arc::clone(state.cache.metrics());
    tokio::spawn(http::server::serve(
        listener,
        router,
        limits,
        metrics,
        stop.clone().cancelled_owned(),
    ))
}

/// Waits for the metrics listener, stopped with the main one (scrapes under way had the grace
/// to finish), a little at most.
async fn stop_metrics(server: Option<tokio::task::JoinHandle<()>>) {
    if let Some(mut server) = server {
        if tokio::time::timeout(FLUSH_LIMIT, &mut server).await.is_err() {
            server.abort();
        }
    }
}

/// After the signal, in order: no new connections; open responses and the work requests
/// started (downloads) run on for up to `grace`, then are cut (downloads end as failed,
/// releasing their leases); the background loops stop and are waited for;
/// what is only in memory is written; what is left of unfinished downloads (temp files) is
/// removed. Stored objects are never partial: storage writes are atomic.
async fn drain(
    cache: &Cache,
    warm: Option<&WarmJobs>,
    mut server: tokio::task::JoinHandle<()>,
    grace: Duration,
) {
    tracing::info!(grace = ?grace, fills = cache.fills_in_progress(), "shutting down: no new connections; \
        finishing open responses and downloads");
    // Work for clients to come is over: a warm-up and prefetches end first (their downloads,
    // with no client left, are abandoned as any other).
    if let Some(warm) = warm {
        if tokio::time::timeout(FLUSH_LIMIT, warm.stop()).await.is_err() {
            tracing::warn!("the warm-up did not stop in time; leaving it");
        }
    }
    if tokio::time::timeout(FLUSH_LIMIT, cache.stop_prefetching())
        .await
        .is_err()
    {
        tracing::warn!("prefetches did not stop in time; leaving them");
    }
    let finished = tokio::time::timeout(grace, async {
        let _ = (&mut server).await;
        cache.fills_finished().await;
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            fills = cache.fills_in_progress(),
            "grace period over: cutting the remaining responses and downloads"
        );
        server.abort();
        // Each fill ends as a failed one: its lease released for the other replicas at once,
        // its temp file removed.
        if tokio::time::timeout(FLUSH_LIMIT, cache.cancel_fills())
            .await
            .is_err()
        {
            tracing::warn!("downloads did not end in time; leaving them (their leases expire)");
        }
    }
    // Each loop stops at its next await; one stuck in a database call must not hold the exit.
    if tokio::time::timeout(FLUSH_LIMIT, cache.background().shutdown())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop in time; leaving them");
    }
    // Bounded: a database that no longer answers must not hold the exit.
    if tokio::time::timeout(FLUSH_LIMIT, cache.flush()).await.is_err() {
        tracing::warn!("recording the last access times took too long; they are lost");
    }
    scratch::remove(cache.tmp_dir());
    tracing::info!("stopped");
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
