//! A fill's task: what feeds its temp file (this replica's own upstream download, or a copy of
//! the download of the replica holding the fetch lease), raced against every client leaving,
//! then the fill's end (`Fill::end`).

use std::{panic::AssertUnwindSafe, sync::Arc};

use futures::{future::Either, FutureExt};
use tracing::Instrument;

use super::{admission::FillPermit, download, fill::Fill, mirror, Cache, CacheError};
use crate::{
    db::{Lease, NarInfoRecord},
    lease::HeldLease,
    scratch::tempfile_in,
    storage::{BlobKey, StorageError},
};

/// What fills a temp file.
pub(super) enum Feed {
    /// This replica downloads from the upstream, under `lease` (when it holds one).
    Upstream(Option<HeldLease>),
    /// This replica copies the download of the lease holder.
    Holder(Lease),
}

impl Cache {
    /// Registers and spawns a fill; its `permit` is given back once its temp file is gone.
    pub(super) async fn start_fill(
        &self,
        key: &BlobKey,
        record: Arc<NarInfoRecord>,
        feed: Feed,
        permit: FillPermit,
    ) -> Result<Arc<Fill>, CacheError> {
        let fill = match self.fills.start(key.clone(), tempfile_in(&self.tmp_dir, key)) {
            Ok(fill) => fill,
            Err(err) => {
                if let Feed::Upstream(Some(lease)) = feed {
                    lease.release().await;
                }
                return Err(StorageError::io("creating a temp file", err).into());
            }
        };
        let span = match &feed {
            Feed::Upstream(_) => {
                tracing::info!(nar = %key, store_path = %record.info.store_path, upstream = %record.info.url, "fetching NAR");
                tracing::info_span!(parent: None, "upstream_nar", nar = %key, url = %record.info.url)
            }
            Feed::Holder(holder) => {
                tracing::info!(nar = %key, holder = %holder.holder, address = %holder.address,
                    "copying the NAR from the replica fetching it");
                tracing::info_span!(parent: None, "replica_nar", nar = %key, holder = %holder.holder)
            }
        };
        // A trace of its own: a download outlives the request (or prefetch) that started it,
        // which must not stay open, and be exported, only when the download ends.
        span.follows_from(tracing::Span::current());
        let run = run(self.clone(), Arc::clone(&fill), record, feed);
        self.fill_tasks.spawn(
            async move {
                run.await;
                drop(permit);
            }
            .instrument(span),
        );
        Ok(fill)
    }
}

/// Runs the feed to its end and ends the fill. Spawned, so no one client can cancel it, but
/// cancelled once every client left (see `Fill::abandoned`), or by shutdown (`shutdown_cut`):
/// dropping the feed closes its connection (to the upstream, or to the holder, which counts one
/// client less there).
async fn run(cache: Cache, fill: Arc<Fill>, record: Arc<NarInfoRecord>, feed: Feed) {
    let (mut lease, holder) = match feed {
        Feed::Upstream(lease) => (lease, None),
        Feed::Holder(holder) => (None, Some(holder)),
    };
    let what = if holder.is_some() {
        "copying another replica's download"
    } else {
        "NAR fill"
    };
    let work = match holder {
        None => Either::Left(download::download_verify_commit(&cache, &fill, &record)),
        // Takes the lease into `lease` when it takes the download over.
        Some(holder) => Either::Right(mirror::copy(&cache, &fill, &record, holder, &mut lease)),
    };
    let finish_below = cache.admission.limits().finish_abandoned_below;
    // A panic must still end the fill, or its clients would wait forever.
    let outcome = tokio::select! {
        result = AssertUnwindSafe(work).catch_unwind() => {
            result.unwrap_or_else(|e| Err(CacheError::panicked(what, &*e)))
        }
        () = fill.abandoned(finish_below) => Err(CacheError::Abandoned),
        () = fill.given_up() => Err(CacheError::Abandoned),
        () = shutdown_cut(&cache, &fill) => Err(CacheError::FillFailed("the server is shutting down")),
    };
    match &outcome {
        Ok(()) => {}
        Err(CacheError::Abandoned) => {
            cache.metrics.fills_abandoned.inc();
        }
        Err(err) if cache.fills_cancelled.is_cancelled() => {
            tracing::warn!(nar = %fill.key, error = %err, "{what} cut by the shutdown")
        }
        Err(err) => {
            tracing::error!(nar = %fill.key, store_path = %record.info.store_path, error = %err, "{what} failed")
        }
    }
    fill.end(&cache.fills, outcome, lease).await;
}

/// Resolves once shutdown's grace period is over (`Cache::cancel_fills`) while the fill is still
/// downloading. A fill with every byte is left to finish (bounded by shutdown): cut while it
/// is being stored, it could leave an object without its record.
async fn shutdown_cut(cache: &Cache, fill: &Fill) {
    cache.fills_cancelled.cancelled().await;
    if !fill.downloading() {
        std::future::pending::<()>().await;
    }
}
