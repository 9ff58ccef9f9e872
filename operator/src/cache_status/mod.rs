//! The cache status poller: every `--cache-status-interval` (default a minute) the leader asks
//! the ready replicas of every NixCache for their `GET /status` and writes what they say to
//! `status.cache` ([`aggregate`] says how the answers are combined).
//!
//! - Each pod is asked directly (pod IP and the proxy's container port), not through the
//!   Service, which would land on one replica at random: hits and bytes are per replica.
//! - At most [`Options::concurrency`] requests at once per NixCache, each bounded by
//!   [`Options::timeout`] and [`client::MAX_BODY_BYTES`]. A replica that does not answer is
//!   counted (`nixcache_operator_status_polls_total{result}`) and logged at debug; when no
//!   replica of a NixCache answers, a warning at most every [`WARN_INTERVAL`] per NixCache, and
//!   nothing is written (the last figures stand; `observedAt` shows their age).
//! - `status.cache` is written with a server-side apply under a field manager of its own
//!   ([`poll::STATUS_MANAGER`]), so it never takes or drops the reconciler's status fields, and
//!   the controller ignores changes to it ([`crate::controller`]'s NixCache predicate): a write
//!   every minute never causes a reconciliation.
//! - Private caches (`spec.private`) are not asked: their `/status` needs a credential the
//!   operator does not have.
//!
//! Each round also sets `nixcache_operator_replicas` (desired and ready, from every NixCache's
//! spec and status). The poller runs inside [`crate::run`]'s leader section, beside the
//! controller: it starts when this replica leads, and stops with the controller on shutdown or a
//! lost Lease, when the counts are dropped (a former leader must not report stale ones).

pub mod aggregate;
pub mod client;
pub mod poll;
pub mod report;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::ListParams;
use kube::ResourceExt;
use nixcache_crds::NixCache;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::controller::{self, Scope};
use crate::metrics::ReplicaCounts;
use crate::Error;

/// The default of `--cache-status-interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// At most one warning per NixCache (or for the NixCache list) in this interval; the rest at debug.
pub const WARN_INTERVAL: Duration = Duration::from_secs(600);

/// How the poller runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Pause between rounds.
    pub interval: Duration,
    /// Longest wait for one replica's answer.
    pub timeout: Duration,
    /// Replicas of one NixCache asked at once.
    pub concurrency: usize,
}

impl Options {
    /// A round every `interval`, 2 s per replica, 8 at once.
    pub fn every(interval: Duration) -> Self {
        Self {
            interval,
            timeout: Duration::from_secs(2),
            concurrency: 8,
        }
    }
}

/// Polls every `options.interval` until `shutdown` is cancelled (or the future is dropped).
pub async fn run(ctx: Arc<Context>, scope: Scope, options: Options, shutdown: CancellationToken) {
    if options.interval.is_zero() {
        return;
    }
    tracing::info!(interval = ?options.interval, "polling the replicas' /status into status.cache");
    let mut poller = Poller::new(ctx, scope, options);
    let mut ticks = tokio::time::interval(options.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        tokio::select! {
            () = poller.round() => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// What the alert on replicas not ready compares: the replicas the NixCache asks for (those that
/// exist while an autoscaler decides) and those ready, from its status.
fn replica_counts(nc: &NixCache) -> ReplicaCounts {
    let status = nc.status.clone().unwrap_or_default();
    let desired = match nc.spec.autoscaling {
        Some(_) => status.replicas,
        None => nc.spec.replicas,
    };
    ReplicaCounts {
        namespace: nc.namespace().unwrap_or_default(),
        nixcache: nc.name_any(),
        desired: i64::from(desired),
        ready: i64::from(status.ready_replicas),
        gc: nc.spec.gc.is_some(),
    }
}

/// The poller's state between rounds.
pub struct Poller {
    ctx: Arc<Context>,
    scope: Scope,
    options: Options,
    last_warning: HashMap<String, Instant>,
}

impl Poller {
    /// A poller of the NixCaches in `scope`.
    pub fn new(ctx: Arc<Context>, scope: Scope, options: Options) -> Self {
        Self {
            ctx,
            scope,
            options,
            last_warning: HashMap::new(),
        }
    }

    /// One round: every NixCache in scope, one after the other.
    pub async fn round(&mut self) {
        let api = controller::api::<NixCache>(&self.ctx.client, &self.scope);
        let caches = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) => {
                let error = Error::kube("list NixCaches for their status", e);
                self.warn("", &error.summary());
                return;
            }
        };
        self.ctx
            .metrics
            .set_replicas(&caches.iter().map(replica_counts).collect::<Vec<_>>());
        for nc in caches.iter().filter(|nc| nc.spec.private.is_none()) {
            let key = format!("{}/{}", nc.namespace().unwrap_or_default(), nc.name_any());
            if let Err(message) = self.one(nc).await {
                self.warn(&key, &message);
            }
        }
    }

    /// Polls one NixCache and writes its status; `Err(what to log)` when nothing was written
    /// although replicas were asked.
    async fn one(&self, nc: &NixCache) -> Result<(), String> {
        let outcome = poll::poll(&self.ctx, nc, &self.options)
            .await
            .map_err(|e| e.summary())?;
        let Some(status) = outcome.status else {
            return match outcome.failure {
                Some((pod, error)) => Err(format!(
                    "none of the {} ready replicas answered GET /status (pod {pod}: {error})",
                    outcome.asked
                )),
                // No ready replica: nothing to ask, nothing to say.
                None => Ok(()),
            };
        };
        poll::write(&self.ctx, nc, &status).await.map_err(|e| e.summary())
    }

    fn warn(&mut self, key: &str, message: &str) {
        let now = Instant::now();
        let due = self
            .last_warning
            .get(key)
            .is_none_or(|last| now.duration_since(*last) >= WARN_INTERVAL);
        if due {
            self.last_warning.insert(key.to_owned(), now);
            tracing::warn!(nixcache = key, error = message, "cannot update the cache status");
        } else {
            tracing::debug!(nixcache = key, error = message, "cannot update the cache status");
        }
    }
}
