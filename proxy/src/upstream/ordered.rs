//! Asking the upstreams one at a time, best priority first, for what is asked for rarely
//! (listings, logs, build traces): no race that downloads several copies.

use std::{future::Future, sync::Arc};

use super::{Upstream, UpstreamError, Upstreams};

/// What the upstreams said, asked in order.
pub enum Asked<T> {
    Found(T),
    /// Every upstream asked answered that it has none.
    NotFound,
    /// None had it, and at least one failed or was skipped as down.
    Failed(UpstreamError),
}

impl Upstreams {
    /// Asks the upstreams that are not down, best priority first, until one has it.
    pub(super) async fn ask_in_order<'a, T, F, Fut>(&'a self, ask: F) -> Asked<T>
    where
        F: Fn(&'a Arc<Upstream>) -> Fut,
        Fut: Future<Output = Result<Option<T>, UpstreamError>>,
    {
        let (mut order, down): (Vec<&Arc<Upstream>>, Vec<_>) =
            self.list.iter().partition(|u| !u.health.is_down());
        order.sort_by_key(|u| u.priority());
        let mut failure = None;
        for upstream in order {
            match ask(upstream).await {
                Ok(Some(found)) => return Asked::Found(found),
                Ok(None) => {}
                Err(err) => failure = Some(err),
            }
        }
        match failure {
            Some(err) => Asked::Failed(err),
            None if !down.is_empty() => Asked::Failed(UpstreamError::Down {
                upstreams: down.len(),
                retry_after: self.ctx.options.probe_interval,
            }),
            None => Asked::NotFound,
        }
    }
}
