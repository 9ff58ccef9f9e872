//! Probes of each upstream's nix-cache-info on a schedule (learning its priority on the way),
//! and the log lines and gauge that follow its health.

use std::time::Instant;

use nixcache_protocol::{CacheInfo, STORE_DIR};

use super::health::{Change, UpstreamState};
use super::request::TaskContext;
use super::{Upstream, UpstreamError, Upstreams, DEFAULT_PRIORITY};

impl Upstreams {
    /// Probes every upstream at once. Failures are logged and mark the upstream down; they never
    /// stop the proxy.
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
        match self.ctx.get_text(upstream, url).await {
            Ok(text) => {
                let change = upstream.health.probe_answered(started.elapsed());
                self.ctx.note(upstream, change, None);
                if !upstream.priority_known() {
                    learn_priority(upstream, text.as_deref());
                }
            }
            Err(err) if err.means_unavailable() => {
                let change = upstream.health.probe_failed(&err);
                self.ctx.note(upstream, change, Some(&err));
            }
            // It answered, if strangely (too large, a refused redirect): there, but say so.
            Err(err) => {
                let change = upstream.health.probe_answered(started.elapsed());
                self.ctx.note(upstream, change, None);
                tracing::warn!(upstream = upstream.url(), error = %err, "upstream's nix-cache-info is unusable");
            }
        }
    }
}

/// Takes the priority from nix-cache-info, or Nix's default when the upstream has none.
fn learn_priority(upstream: &Upstream, text: Option<&str>) {
    let Some(text) = text else {
        tracing::warn!(
            upstream = upstream.url(),
            priority = DEFAULT_PRIORITY,
            "upstream has no nix-cache-info (404); its priority is taken to be Nix's default"
        );
        upstream.set_priority(DEFAULT_PRIORITY);
        return;
    };
    match CacheInfo::parse(text) {
        Ok(info) if info.store_dir != STORE_DIR => {
            tracing::warn!(
                upstream = upstream.url(),
                store_dir = info.store_dir,
                "upstream serves another store dir"
            );
        }
        Ok(info) => {
            let priority = info.priority.unwrap_or(DEFAULT_PRIORITY);
            upstream.set_priority(priority);
            tracing::info!(upstream = upstream.url(), priority, "upstream ready");
        }
        Err(e) => tracing::warn!(upstream = upstream.url(), error = %e, "invalid nix-cache-info"),
    }
}

impl TaskContext {
    /// A lookup or download got an HTTP answer from `upstream`.
    pub(super) fn request_answered(&self, upstream: &Upstream) {
        let change = upstream.health.request_answered();
        self.note(upstream, change, None);
    }

    /// A lookup or download from `upstream` failed.
    pub(super) fn request_failed(&self, upstream: &Upstream, err: &UpstreamError) {
        let change = upstream.health.request_failed(err);
        self.note(upstream, change, Some(err));
    }

    /// Logs a change of health and sets the `upstream_up` gauge.
    fn note(&self, upstream: &Upstream, change: Option<Change>, err: Option<&UpstreamError>) {
        let Some(Change { from, to }) = change else {
            return;
        };
        self.options
            .metrics
            .set_upstream_up(upstream.url(), to == UpstreamState::Up);
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
}
