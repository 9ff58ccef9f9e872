//! Downloading the NARs of a walk a client is downloading, before it asks for each.

use std::{sync::Arc, time::Instant};

use tracing::{Instrument, Span};

use super::{walks::Due, walks::WalkPath, Cache};
use crate::{
    cache::{
        fill::{Client, Fill},
        nar::{Source, Start},
    },
    db::NarInfoRecord,
    metrics::{ObjectKind, PrefetchOutcome, PrefetchSkip},
    storage::BlobKey,
};

/// A prefetch's hold on the fill it started: the fill's client, which keeps it from being
/// abandoned. Dropped (the fill ended, or prefetching stopped), it ends a download no client
/// follows at once.
struct Hold {
    fill: Arc<Fill>,
    _client: Client,
}

impl Hold {
    /// Ends the download unless a client follows it; `true` when it did.
    fn give_up(&self) -> bool {
        self.fill.give_up_if_alone(1)
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.give_up();
    }
}

impl Cache {
    /// Prefetches `due` in the background, in order, at most `fills` at once in all; past the
    /// queue's bound, a NAR is skipped.
    pub(super) fn prefetch_nars(&self, due: Due) {
        let metrics = &self.metrics.prefetch;
        for reason in due.skipped {
            metrics.skipped(ObjectKind::Nar, reason);
        }
        let mut queued = Vec::with_capacity(due.paths.len());
        for path in due.paths {
            match Arc::clone(&self.prefetch.nars_queued).try_acquire_owned() {
                Ok(place) => queued.push((path, place)),
                Err(_) => metrics.skipped(ObjectKind::Nar, PrefetchSkip::Busy),
            }
        }
        if queued.is_empty() {
            return;
        }
        // A trace of its own (the downloads outlive the request that set them off), linked to it.
        let tree = tracing::info_span!(parent: None, "prefetch_nars", nars = queued.len());
        tree.follows_from(Span::current());
        let this = self.clone();
        let walk = async move {
            for (path, place) in queued {
                if this.hot.nar(&path.nar).is_some() || this.fills.get(&BlobKey::for_nar(&path.nar)).is_some()
                {
                    continue;
                }
                let Ok(slot) = Arc::clone(&this.prefetch.fills).acquire_owned().await else {
                    return;
                };
                let one = this.clone();
                let span = tracing::info_span!("prefetch_nar", nar = %path.nar.file_name());
                this.prefetch.spawn(
                    async move {
                        let _held = (place, slot);
                        one.prefetch_nar(path).await;
                    }
                    .instrument(span),
                );
            }
        };
        self.prefetch.spawn(walk.instrument(tree));
    }

    /// Starts `path`'s NAR fill unless it is stored, under way, or there is no spare room, and
    /// follows it to its end.
    async fn prefetch_nar(&self, path: WalkPath) {
        let record = match self.db.get_narinfo(&path.hash).await {
            Ok(Some(record)) if record.nar_file == path.nar => Arc::new(record),
            _ => return,
        };
        if !self
            .prefetch
            .book()
            .ledger
            .nar_started(&path.nar, path.size, Instant::now())
        {
            return;
        }
        let Some(hold) = self.start_prefetch_fill(&path, &record).await else {
            self.prefetch.book().ledger.nar_dropped(&path.nar);
            return;
        };
        self.prefetch.book().ledger.nar_downloading(&path.nar);
        let metrics = &self.metrics.prefetch;
        metrics.count(ObjectKind::Nar, PrefetchOutcome::Started, 1);
        metrics.nar_bytes(PrefetchOutcome::Started, path.size);
        tracing::debug!(nar = %hold.fill.key, store_path = %record.info.store_path, "prefetching NAR");
        if !self.follow_prefetch(&hold).await {
            // Unless a client took it meanwhile, it was for nothing.
            if let Some(bytes) = self.prefetch.book().ledger.nar_used(&path.nar) {
                metrics.count(ObjectKind::Nar, PrefetchOutcome::Wasted, 1);
                metrics.nar_bytes(PrefetchOutcome::Wasted, bytes);
            }
        }
    }

    /// The fill this prefetch started, held; `None` when it started none (stored, under way,
    /// another replica's, no spare room).
    async fn start_prefetch_fill(&self, path: &WalkPath, record: &Arc<NarInfoRecord>) -> Option<Hold> {
        match self.locate_for(&path.nar, record, Start::Prefetch).await {
            Ok((source, true)) => match &*source {
                Source::Local { fill, started: true } => Some(Hold {
                    fill: Arc::clone(fill),
                    _client: fill.attach()?,
                }),
                Source::NoRoom => {
                    self.metrics.prefetch.skipped(ObjectKind::Nar, PrefetchSkip::Busy);
                    None
                }
                _ => None,
            },
            Ok(_) => None,
            Err(err) => {
                tracing::debug!(nar = %path.nar.file_name(), error = %err, "prefetching a NAR failed");
                None
            }
        }
    }

    /// Follows the prefetch's fill to its end: `true` when stored. When a client has to wait
    /// for fill room meanwhile, the fill is ended at once unless a client follows it.
    async fn follow_prefetch(&self, hold: &Hold) -> bool {
        loop {
            // Enabled before the look, so a client that starts waiting in between is seen.
            let waits = self.admission.client_waits();
            tokio::pin!(waits);
            waits.as_mut().enable();
            if self.admission.clients_waiting() && hold.give_up() {
                tracing::debug!(nar = %hold.fill.key, "a client waits for fill room: prefetch given up");
                return false;
            }
            tokio::select! {
                stored = hold.fill.ended() => return stored,
                () = &mut waits => {}
            }
        }
    }
}
