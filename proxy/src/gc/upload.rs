//! Deleting one abandoned upload (a NAR whose narinfo never came): GC's sweep and fsck's repair.

use std::{sync::Arc, time::Duration};

use nixcache_protocol::NarFile;

use crate::{
    db::{DbError, LeaseClaim, LeaseKey, MetadataStore, Timestamp},
    lease::hold_lease,
    storage::{BlobKey, BlobStore, StorageError},
};

/// How long the NAR's lease lasts while its object is deleted.
const NAR_LEASE_TTL: Duration = Duration::from_secs(30);

/// What became of an upload to sweep.
#[derive(Debug)]
pub enum Swept {
    /// Gone meanwhile, or recorded at or after `before` (uploaded again).
    NotStale,
    /// Its row is deleted, but its NAR's lease was held: the object stays, unrecorded.
    Busy,
    /// Row deleted, and the object too unless a row records it again; the storage's error when
    /// that delete failed (the object then stays, unrecorded).
    Deleted { storage_error: Option<StorageError> },
}

/// The row goes first, in a statement that checks its age, so a narinfo upload that claimed it
/// meanwhile (and made it a stored NAR) keeps the object; then the object, under the NAR's
/// lease, unless a stored NAR or a new upload records it by then.
pub async fn sweep_upload(
    db: &Arc<dyn MetadataStore>,
    storage: &dyn BlobStore,
    holder: &str,
    file: &NarFile,
    before: Timestamp,
) -> Result<Swept, DbError> {
    if !db.delete_stale_upload(file, before).await? {
        return Ok(Swept::NotStale);
    }
    let lease = LeaseKey::nar(file);
    if let LeaseClaim::Held(_) = db.claim_lease(&lease, holder, "", NAR_LEASE_TTL).await? {
        return Ok(Swept::Busy);
    }
    // Released below whatever happens, also when the database fails here, and when the caller
    // is dropped (cancelled) meanwhile.
    let held = hold_lease(Arc::clone(db), lease, holder.to_owned(), NAR_LEASE_TTL);
    let recorded =
        async { Ok::<_, DbError>(db.get_nar(file).await?.is_some() || db.get_upload(file).await?.is_some()) }
            .await;
    let storage_error = match recorded {
        Ok(false) => match storage.delete(&BlobKey::for_nar(file)).await {
            Ok(_) | Err(StorageError::NotFound(_)) => None,
            Err(err) => Some(err),
        },
        _ => None,
    };
    held.release().await;
    recorded?;
    Ok(Swept::Deleted { storage_error })
}
