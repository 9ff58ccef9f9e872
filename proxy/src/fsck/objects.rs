//! The storage listing's pass: objects no row records. Those under a key the cache writes, where
//! the store keeps that key, older than `min_age` and still there when looked at again, are
//! orphans (a crash between object and row, a GC cut short, a hand edit); objects under any
//! other name or place are counted and left alone.
//!
//! Only NARs' orphans are deleted (under the NAR's lease); unrecorded listings and logs are
//! counted and left alone. Orphans are deleted only once the whole listing is read, and only while they are few next to
//! the objects rows do record: many unrecorded objects mean this is not the cache's database
//! (an empty one, another cache's, a bucket shared with `nix copy`), not damage.

use std::{sync::Arc, time::SystemTime};

use futures::{StreamExt, TryStreamExt};
use nixcache_protocol::NarFile;

use super::{FsckError, Run, NAR_LEASE_TTL, PAGE};
use crate::{
    db::{LeaseClaim, LeaseKey},
    lease::hold_lease,
    storage::{BlobKey, ListedObject, StorageError},
};

/// Orphans held for deletion at most; more stop the repairs of orphans.
const ORPHANS_HELD: usize = 100_000;
/// Orphans are deleted only while rows record some objects, and the orphans are few: at most
/// this many, or one in [`ORPHAN_SHARE`] of the recorded objects.
const ORPHANS_FEW: u64 = 16;
const ORPHAN_SHARE: u64 = 10;

/// What a listed name is.
enum Kind {
    Nar(NarFile),
    /// A listing, log or build trace.
    Side(BlobKey),
}

fn kind_of(object: &ListedObject) -> Option<Kind> {
    if !object.keyed {
        return None;
    }
    match NarFile::parse(&object.name) {
        Ok(file) => Some(Kind::Nar(file)),
        Err(_) => BlobKey::for_side_file_row(&object.name).map(Kind::Side),
    }
}

impl Kind {
    fn key(&self) -> BlobKey {
        match self {
            Self::Nar(file) => BlobKey::for_nar(file),
            Self::Side(key) => key.clone(),
        }
    }
}

/// An orphan found: what it is.
struct Orphan {
    kind: Kind,
}

/// The listing pass's own state.
#[derive(Default)]
struct Found {
    orphans: Vec<Orphan>,
    /// Listed objects under keys that rows record.
    recorded: u64,
}

impl Run<'_> {
    pub(super) async fn check_objects(&mut self) -> Result<(), FsckError> {
        let mut found = Found::default();
        let mut pages = self.storage.list().try_chunks(PAGE as usize);
        while let Some(page) = pages.next().await {
            match page {
                Ok(page) => self.check_listed(page, &mut found).await?,
                Err(err) => {
                    // What was found so far is reported; nothing unlisted is judged.
                    tracing::error!(error = %err.1, "listing the storage failed; orphans not looked for further");
                    self.report.unreadable += 1;
                    return Ok(());
                }
            }
        }
        self.delete_orphans(found).await
    }

    async fn check_listed(&mut self, page: Vec<ListedObject>, found: &mut Found) -> Result<(), FsckError> {
        let keyed: Vec<(ListedObject, Kind)> = page
            .into_iter()
            .filter_map(|o| {
                self.report.objects.add(o.size);
                match kind_of(&o) {
                    Some(kind) => Some((o, kind)),
                    None => {
                        tracing::warn!(object = %o.name, "an object where nixcache puts none; left alone");
                        self.report.unknown.add(o.size);
                        None
                    }
                }
            })
            .collect();
        // Only key names, which are ASCII, as the columns are.
        let names: Vec<String> = keyed.iter().map(|(o, _)| o.name.clone()).collect();
        let recorded = self.db.recorded_among(&names).await?;
        let old_before = SystemTime::now().checked_sub(self.options.min_age);
        for (object, kind) in keyed {
            if recorded.contains(&object.name) {
                found.recorded += 1;
                continue;
            }
            // Without a time, an object is taken as young: leaving it costs nothing.
            let old = matches!((object.modified, old_before), (Some(m), Some(before)) if m < before);
            if !old {
                self.report.young += 1;
                continue;
            }
            // Gone meanwhile (a GC between its row and its object) is no orphan.
            match self.storage.stat(&kind.key()).await {
                Ok(Some(_)) => {}
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(object = %object.name, error = %err, "could not look at an object again");
                    self.report.unreadable += 1;
                    continue;
                }
            }
            if let Kind::Side(_) = kind {
                // Listings and logs have no lease to delete them under safely; one is
                // overwritten when it is fetched or uploaded again.
                tracing::info!(object = %object.name, "a listing or log no row records; left alone");
                self.report.side_orphans.add(object.size);
                continue;
            }
            self.report.orphans.add(object.size);
            tracing::warn!(object = %object.name, size = object.size, "an object no row records");
            if found.orphans.len() < ORPHANS_HELD {
                found.orphans.push(Orphan { kind });
            }
        }
        Ok(())
    }

    /// Deletes the orphans found, unless they are too many to be damage.
    async fn delete_orphans(&mut self, found: Found) -> Result<(), FsckError> {
        let count = self.report.orphans.count;
        if count == 0 || !self.options.repair {
            return Ok(());
        }
        let few = count < found.recorded
            && (count <= ORPHANS_FEW || count.saturating_mul(ORPHAN_SHARE) <= found.recorded);
        if count > ORPHANS_HELD as u64 || !few {
            self.report.orphans_kept = true;
            tracing::error!(
                orphans = count,
                recorded = found.recorded,
                "many objects no row records next to those rows do: is this the cache's database \
                 (and the storage only the cache's)? no orphan is deleted"
            );
            return Ok(());
        }
        if !self.repairing() {
            return Ok(());
        }
        for orphan in found.orphans {
            match self.delete_orphan(&orphan).await {
                Ok(true) => self.report.repaired += 1,
                Ok(false) => self.report.busy += 1,
                Err(FsckError::Storage(err)) => {
                    tracing::warn!(object = %orphan.kind.key(), error = %err, "deleting an orphan failed");
                    self.report.unreadable += 1;
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Deletes a NAR's object if no row records it yet, under the NAR's lease; `false` when the
    /// lease was held (`true` also when a row records it by then: nothing is left to do).
    async fn delete_orphan(&self, orphan: &Orphan) -> Result<bool, FsckError> {
        let Kind::Nar(file) = &orphan.kind else {
            return Ok(true); // never collected
        };
        let lease = LeaseKey::nar(file);
        if let LeaseClaim::Held(_) = self
            .db
            .claim_lease(&lease, self.holder, "", NAR_LEASE_TTL)
            .await?
        {
            return Ok(false);
        }
        let held = hold_lease(Arc::clone(self.db), lease, self.holder.to_owned(), NAR_LEASE_TTL);
        let result = async {
            let unrecorded =
                self.db.get_nar(file).await?.is_none() && self.db.get_upload(file).await?.is_none();
            if unrecorded {
                ignore_absent(self.storage.delete(&orphan.kind.key()).await)?;
            }
            Ok(true)
        }
        .await;
        held.release().await;
        result
    }
}

pub(super) fn ignore_absent(deleted: Result<bool, StorageError>) -> Result<(), FsckError> {
    match deleted {
        Ok(_) | Err(StorageError::NotFound(_)) => Ok(()),
        Err(err) => Err(err.into()),
    }
}
