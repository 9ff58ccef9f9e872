//! Probes of each upstream's nix-cache-info on a schedule (learning its priority on the way),
//! and the log lines that follow its health.

use std::time::Instant;

use nixcache_protocol::{CacheInfo, STORE_DIR};

use super::health::{Change, UpstreamState};
use super::{Upstream, UpstreamError, Upstreams};

impl Upstreams {
    /// Probes every upstream at once, each for at most the header timeout (a round never waits
    /// longer on a hanging one). Failures are logged and mark the upstream down; they never stop
    /// the proxy.
    pub async fn probe(&self) {
        futures::future::join_all(self.list.iter().map(|u| self.probe_one(u))).await;
    }

    async fn probe_one(&self, upstream: &Upstream) {
        let url = match upstream.base.join("nix-cache-info") {
            Ok(url) => url,
            Err(e) => {
                tracing::warn!(upstream = upstream.url(), error = %e, "cannot probe upstream");
                return;
            }
        };
        let started = Instant::now();
        let after = self.ctx.options.header_timeout;
        let answer = match tokio::time::timeout(after, self.ctx.get_text(upstream, url.clone())).await {
            Ok(answer) => answer,
            Err(_) => Err(UpstreamError::Timeout {
                url: url.to_string(),
                after,
            }),
        };
        match answer {
            Ok(text) => {
                let change = upstream.health.probe_answered(started.elapsed());
                note(upstream, change, None);
                learn_priority(upstream, text.as_deref(), change);
            }
            Err(err) if err.means_unavailable() => {
                let change = upstream.health.probe_failed(started, &err);
                note(upstream, change, Some(&err));
            }
            // It answered, if strangely (too large, a refused redirect): there, but say so.
            Err(err) => {
                let change = upstream.health.probe_answered(started.elapsed());
                note(upstream, change, None);
                tracing::warn!(upstream = upstream.url(), error = %err, "upstream's nix-cache-info is unusable");
            }
        }
    }
}

/// Takes the priority from nix-cache-info (each answered probe: it may change), unless
/// `?priority=N` fixed it. Without one, Nix's default applies; said once, when it first answers.
fn learn_priority(upstream: &Upstream, text: Option<&str>, change: Option<Change>) {
    if upstream.priority_fixed {
        return;
    }
    let first_answer = change.is_some_and(|c| c.from == UpstreamState::Unknown);
    let Some(text) = text else {
        if first_answer {
            tracing::warn!(
                upstream = upstream.url(),
                "upstream has no nix-cache-info (404); its priority is taken to be Nix's default"
            );
        }
        return;
    };
    match CacheInfo::parse(text) {
        Ok(info) if info.store_dir != STORE_DIR => {
            if first_answer {
                tracing::warn!(
                    upstream = upstream.url(),
                    store_dir = info.store_dir,
                    "upstream serves another store dir"
                );
            }
        }
        Ok(info) => {
            let priority = info.priority.unwrap_or(super::DEFAULT_PRIORITY);
            if upstream.set_priority(priority) {
                tracing::info!(upstream = upstream.url(), priority, "upstream priority");
            }
        }
        Err(e) if first_answer => {
            tracing::warn!(upstream = upstream.url(), error = %e, "invalid nix-cache-info")
        }
        Err(_) => {}
    }
}

impl Upstream {
    /// A lookup or download got an HTTP answer from it.
    pub(super) fn request_answered(&self) {
        note(self, self.health.request_answered(), None);
    }

    /// A lookup or download from it failed.
    pub(super) fn request_failed(&self, err: &UpstreamError) {
        note(self, self.health.request_failed(err), Some(err));
    }
}

/// Logs a change of health (the gauge changed with the state).
fn note(upstream: &Upstream, change: Option<Change>, err: Option<&UpstreamError>) {
    let Some(Change { from, to }) = change else {
        return;
    };
    match (from, to) {
        (_, UpstreamState::Down) => tracing::warn!(
            upstream = upstream.url(),
            error = err.map(tracing::field::display),
            "upstream is down: lookups skip it until a probe of its nix-cache-info gets an answer"
        ),
        (UpstreamState::Down, _) => tracing::info!(upstream = upstream.url(), "upstream is back"),
        _ => tracing::debug!(upstream = upstream.url(), ?to, "upstream health known"),
    }
}
