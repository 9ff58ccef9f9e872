//! Looking up the narinfos of references ahead of the client, level by level.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    time::Instant,
};

use nixcache_protocol::StorePathHash;
use tracing::{Instrument, Span};

use super::{followed_references, Cache};
use crate::{
    db::NarInfoRecord,
    metrics::{ObjectKind, PrefetchOutcome, PrefetchSkip},
};

/// The lookups one narinfo a client asked for set off: their budget, and the span they all run
/// in (a trace of its own, as it outlives the request; linked to it), made with the first
/// lookup, so a narinfo whose references are all known leaves no empty trace.
#[derive(Clone)]
struct Tree {
    budget: Arc<AtomicUsize>,
    root: StorePathHash,
    depth: u32,
    request: Span,
    span: Arc<OnceLock<Span>>,
}

impl Tree {
    fn span(&self) -> &Span {
        self.span.get_or_init(|| {
            let span =
                tracing::info_span!(parent: None, "prefetch_tree", root = %self.root, depth = self.depth);
            span.follows_from(&self.request);
            span
        })
    }
}

impl Cache {
    /// Looks up the narinfos `references` of `from` name, and theirs, `depth` levels deep, at
    /// most `paths` of them.
    pub(super) fn prefetch_references(&self, from: StorePathHash, references: Vec<StorePathHash>) {
        let options = self.prefetch.options;
        if options.depth == 0 {
            return;
        }
        let tree = Tree {
            budget: Arc::new(AtomicUsize::new(options.paths)),
            root: from,
            depth: options.depth,
            request: Span::current(),
            span: Arc::default(),
        };
        for reference in references.into_iter().filter(|r| *r != from) {
            self.prefetch_narinfo(reference, options.depth, &tree);
        }
    }

    /// Starts the lookup of `hash` unless it is known, remembered as absent, already being
    /// prefetched, or past the budget or the queue.
    fn prefetch_narinfo(&self, hash: StorePathHash, depth: u32, tree: &Tree) {
        if self.hot.narinfo(&hash).is_some() || self.negative.contains(&hash) {
            return;
        }
        let metrics = &self.metrics.prefetch;
        let take = |left: usize| left.checked_sub(1);
        if tree
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, take)
            .is_err()
        {
            metrics.skipped(ObjectKind::Narinfo, PrefetchSkip::Budget);
            return;
        }
        let Ok(queued) = Arc::clone(&self.prefetch.queued).try_acquire_owned() else {
            metrics.skipped(ObjectKind::Narinfo, PrefetchSkip::Busy);
            return;
        };
        if !self.prefetch.book().ledger.narinfo_started(hash, Instant::now()) {
            return;
        }
        let (this, tree) = (self.clone(), tree.clone());
        let span = tracing::info_span!(parent: tree.span(), "prefetch_narinfo", %hash);
        let lookup = async move {
            let _queued = queued;
            let Ok(_running) = this.prefetch.lookups.acquire().await else {
                return;
            };
            let Some(record) = this.look_ahead(hash).await else {
                this.prefetch.book().ledger.narinfo_dropped(&hash);
                return;
            };
            let references = followed_references(&record);
            this.prefetch.book().ledger.narinfo_found(hash);
            // Into the hot cache only now: a client that hits it finds what its walk needs.
            this.render(Arc::clone(&record));
            let metrics = &this.metrics.prefetch;
            metrics.count(ObjectKind::Narinfo, PrefetchOutcome::Started, 1);
            if depth > 1 {
                for reference in references.into_iter().filter(|r| *r != hash) {
                    this.prefetch_narinfo(reference, depth - 1, &tree);
                }
            }
        };
        self.prefetch.spawn(lookup.instrument(span));
    }

    /// The narinfo of `hash`, when this prefetch looked it up: `None` when it was known
    /// already, is absent, failed, or a client's lookup got it (then it is no prefetch).
    async fn look_ahead(&self, hash: StorePathHash) -> Option<Arc<NarInfoRecord>> {
        match self.db.get_narinfo(&hash).await {
            Ok(None) => {}
            Ok(Some(_)) | Err(_) => return None,
        }
        match self.shared_narinfo_lookup(hash).await {
            Ok((record, true)) => Some(record),
            Ok((_, false)) => None,
            Err(err) => {
                tracing::debug!(%hash, error = %err, "prefetching a narinfo failed");
                None
            }
        }
    }
}
