//! Leases held while work runs: a lease row (see `db::MetadataStore::claim_lease`) says which
//! replica (or which kind of work, such as GC) is doing something with a key; a [`HeldLease`]
//! keeps it alive, renewed in the background, until it is released or dropped. Fills, uploads,
//! the scrub and GC all hold them.

use std::{sync::Arc, time::Duration};

use crate::db::{LeaseKey, MetadataStore};

/// Keeps the lease `holder` acquired alive, renewing it every third of `ttl`, until it is
/// released or dropped.
pub fn hold_lease(db: Arc<dyn MetadataStore>, key: LeaseKey, holder: String, ttl: Duration) -> HeldLease {
    let renewer = {
        let (db, key, holder) = (Arc::clone(&db), key.clone(), holder.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                match db.renew_lease(&key, &holder, ttl).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(lease = %key, "lease lost (expired and taken over); the work goes on");
                        return;
                    }
                    Err(err) => tracing::warn!(lease = %key, error = %err, "renewing a lease failed"),
                }
            }
        })
    };
    HeldLease {
        db,
        key,
        holder,
        renewer,
        released: false,
    }
}

/// A lease this replica holds; renewed in the background until released (or dropped).
pub struct HeldLease {
    db: Arc<dyn MetadataStore>,
    key: LeaseKey,
    holder: String,
    renewer: tokio::task::JoinHandle<()>,
    released: bool,
}

impl HeldLease {
    pub async fn release(mut self) {
        self.renewer.abort();
        // Marked released only once done: dropped during the await, `Drop` releases it again.
        if let Err(err) = self.db.release_lease(&self.key, &self.holder).await {
            tracing::warn!(lease = %self.key, error = %err, "releasing a fetch lease failed; it will expire");
        }
        self.released = true;
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.renewer.abort();
        // Outside a runtime (process exit) the lease simply expires.
        if let (false, Ok(runtime)) = (self.released, tokio::runtime::Handle::try_current()) {
            let (db, key, holder) = (Arc::clone(&self.db), self.key.clone(), self.holder.clone());
            runtime.spawn(async move { db.release_lease(&key, &holder).await });
        }
    }
}
