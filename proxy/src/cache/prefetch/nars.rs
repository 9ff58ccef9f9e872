//! Downloading the NARs of a walk a client is downloading, before it asks for each.

use std::{sync::Arc, time::Instant};

use super::{walks::Due, walks::WalkPath, Cache};
use crate::{
    cache::nar::{Source, Start},
    metrics::{ObjectKind, PrefetchOutcome, PrefetchSkip},
    storage::BlobKey,
};

impl Cache {
    /// Prefetches `due` in the background, in order, at most `fills` at once in all.
    pub(super) fn prefetch_nars(&self, due: Due) {
        let metrics = &self.metrics.prefetch;
        for reason in due.skipped {
            metrics.skipped(ObjectKind::Nar, reason);
        }
        if due.paths.is_empty() {
            return;
        }
        let this = self.clone();
        self.prefetch.spawn(async move {
            for path in due.paths {
                if this.hot.nar(&path.nar).is_some() || this.fills.get(&BlobKey::for_nar(&path.nar)).is_some()
                {
                    continue;
                }
                let Ok(slot) = Arc::clone(&this.prefetch.fills).acquire_owned().await else {
                    return;
                };
                let one = this.clone();
                this.prefetch.spawn(async move {
                    let _slot = slot;
                    one.prefetch_nar(path).await;
                });
            }
        });
    }

    /// Starts `path`'s NAR fill unless it is stored, under way, or there is no spare room;
    /// follows it as a client to its end (so it is not abandoned), unless a client has to wait
    /// for room meanwhile: then it lets the fill go.
    async fn prefetch_nar(&self, path: WalkPath) {
        let record = match self.db.get_narinfo(&path.hash).await {
            Ok(Some(record)) if record.nar_file == path.nar => Arc::new(record),
            _ => return,
        };
        if !matches!(self.db.get_nar(&path.nar).await, Ok(None)) {
            return;
        }
        let metrics = &self.metrics.prefetch;
        let Some(permit) = self.admission.try_admit_spare(path.size) else {
            metrics.skipped(ObjectKind::Nar, PrefetchSkip::Busy);
            return;
        };
        if !self
            .prefetch
            .book()
            .ledger
            .nar_started(&path.nar, path.size, Instant::now())
        {
            return;
        }
        let started = match self.locate_for(&path.nar, &record, Start::Prefetch(permit)).await {
            Ok((source, true)) => match &*source {
                Source::Local { fill, started: true } => Some(Arc::clone(fill)),
                _ => None,
            },
            Ok(_) => None,
            Err(err) => {
                tracing::debug!(nar = %path.nar.file_name(), error = %err, "prefetching a NAR failed");
                None
            }
        };
        let Some((fill, client)) = started.and_then(|fill| Some((Arc::clone(&fill), fill.attach()?))) else {
            self.prefetch.book().ledger.nar_dropped(&path.nar);
            return;
        };
        metrics.count(ObjectKind::Nar, PrefetchOutcome::Started, 1);
        metrics.nar_bytes(PrefetchOutcome::Started, path.size);
        tracing::debug!(nar = %fill.key, store_path = %record.info.store_path, "prefetching NAR");
        let stored = loop {
            tokio::select! {
                stored = fill.ended() => break stored,
                () = self.admission.client_waits() => if fill.clients() <= 1 {
                    tracing::debug!(nar = %fill.key, "a client waits for fill room: the prefetch lets its fill go");
                    break false;
                },
            }
        };
        drop(client);
        if !stored {
            // Unless a client took it meanwhile, it was for nothing.
            if let Some(bytes) = self.prefetch.book().ledger.nar_used(&path.nar) {
                metrics.count(ObjectKind::Nar, PrefetchOutcome::Wasted, 1);
                metrics.nar_bytes(PrefetchOutcome::Wasted, bytes);
            }
        }
    }
}
