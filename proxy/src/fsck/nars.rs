//! The stored NARs' pass: every `nars` row's object is checked (a page at a time, `jobs` at
//! once), and a broken one repaired under the NAR's lease.

use std::sync::Arc;

use futures::{stream, StreamExt};
use nixcache_protocol::NarFile;

use super::{
    content::{self, Verdict},
    FsckError, Run, MISSING_BRAKE, NAR_LEASE_TTL, PAGE,
};
use crate::{
    db::{LeaseClaim, LeaseKey, NarRecord, Timestamp},
    lease::hold_lease,
    storage::BlobKey,
};

/// Uploaded narinfos evicted at most for one NAR (several store paths may share one file).
const EVICT_AT_MOST: usize = 64;
/// Rows with a missing object held for repair at most; more stop those repairs.
const MISSING_HELD: usize = 100_000;

impl Run<'_> {
    pub(super) async fn check_nars(&mut self) -> Result<(), FsckError> {
        let (mut after, mut missing): (Option<NarFile>, Vec<(NarRecord, Verdict)>) = (None, Vec::new());
        loop {
            let page = self.db.nars_after(after.as_ref(), PAGE).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.nar_file.clone());
            let checked: Vec<_> = {
                let this = &*self;
                stream::iter(page)
                    .map(|row| async move {
                        let verdict = this.inspect(&row).await;
                        (row, verdict)
                    })
                    .buffer_unordered(self.options.jobs.max(1))
                    .collect()
                    .await
            };
            for (row, verdict) in checked {
                if let Some(deferred) = self.settle(row, verdict).await? {
                    if missing.len() < MISSING_HELD {
                        missing.push(deferred);
                    }
                }
            }
        }
        self.repair_missing(missing).await
    }

    /// Checks one stored NAR; the bytes read with it, when verifying.
    async fn inspect(&self, row: &NarRecord) -> Result<(Verdict, u64), FsckError> {
        if !self.options.verify {
            return Ok((content::stat(self.storage, row).await?, 0));
        }
        // Only a narinfo that agrees with the row says what the file must be: another that
        // names the same file (an upstream's, evicted, wrong) is no judge of it.
        let info = self
            .db
            .narinfo_for_nar(&row.nar_file)
            .await?
            .map(|r| r.info)
            .filter(|info| info.nar_hash == row.nar_hash);
        Ok(content::verify(self.storage, row, info.as_ref()).await?)
    }

    /// Counts what the check found and repairs a damaged object; a row whose object is missing
    /// or the wrong size is returned, to be repaired once every row is counted
    /// ([`Self::repair_missing`]): storage mounted wrong shows as many of those.
    async fn settle(
        &mut self,
        row: NarRecord,
        checked: Result<(Verdict, u64), FsckError>,
    ) -> Result<Option<(NarRecord, Verdict)>, FsckError> {
        self.report.nars.add(row.file_size);
        let (verdict, read) = match checked {
            Ok(checked) => checked,
            // A database that fails fails the run; a storage error leaves this one unchecked.
            Err(FsckError::Storage(err)) => {
                tracing::warn!(nar = %row.nar_file.file_name(), error = %err, "could not check a stored NAR");
                self.report.unreadable += 1;
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        self.report.verified_bytes += read;
        // A GC that removed the row (then the object) after the page was read is no problem.
        if verdict != Verdict::Intact && self.db.get_nar(&row.nar_file).await?.as_ref() != Some(&row) {
            return Ok(None);
        }
        self.note_missing(matches!(verdict, Verdict::Missing | Verdict::WrongSize(_)));
        match &verdict {
            Verdict::Intact => return Ok(None),
            Verdict::Missing => self.report.missing.add(row.file_size),
            Verdict::WrongSize(size) => self.report.wrong_size.add(*size),
            Verdict::Damaged(_) => self.report.damaged.add(row.file_size),
        }
        tracing::warn!(nar = %row.nar_file.file_name(), recorded_size = row.file_size, problem = ?verdict, "stored NAR is broken");
        if !self.options.repair || self.options.dry_run {
            // What a repair would lose (it evicts them, so that they can be pushed again).
            if let Some(path) = self.uploaded_only(&row.nar_file).await? {
                self.report.lose(path);
            }
            return Ok(None);
        }
        if matches!(verdict, Verdict::Damaged(_)) {
            if self.repairing() {
                self.repair_counted(&row, &verdict).await?;
            }
            return Ok(None);
        }
        Ok(Some((row, verdict)))
    }

    /// Repairs the rows whose object is missing or the wrong size, unless so many are that
    /// storage looks wrong (another volume, bucket or prefix, a restore under way).
    async fn repair_missing(&mut self, missing: Vec<(NarRecord, Verdict)>) -> Result<(), FsckError> {
        let count = self.report.missing.count + self.report.wrong_size.count;
        let most = self.report.nars.count / 2;
        if self.options.repair
            && count > u64::from(MISSING_BRAKE)
            && (count > most || missing.len() >= MISSING_HELD)
            && !self.report.braked
        {
            self.brake(count);
        }
        if !self.repairing() {
            return Ok(());
        }
        for (row, verdict) in missing {
            self.repair_counted(&row, &verdict).await?;
        }
        Ok(())
    }

    /// [`Self::repair`], counted in the report.
    async fn repair_counted(&mut self, row: &NarRecord, verdict: &Verdict) -> Result<(), FsckError> {
        match self.repair(row, verdict).await {
            Ok(Some(evicted)) => {
                self.report.repaired += 1;
                evicted.into_iter().for_each(|path| self.report.lose(path));
            }
            Ok(None) => self.report.busy += 1,
            Err(FsckError::Storage(err)) => {
                tracing::warn!(nar = %row.nar_file.file_name(), error = %err, "repairing a stored NAR failed");
                self.report.unreadable += 1;
            }
            Err(err) => return Err(err),
        }
        Ok(())
    }

    /// The store path of an uploaded narinfo naming `file` when no upstream's does: then the
    /// NAR cannot be fetched again.
    async fn uploaded_only(&self, file: &NarFile) -> Result<Option<String>, FsckError> {
        Ok(self
            .db
            .narinfo_for_nar(file)
            .await?
            .filter(|r| r.uploaded())
            .map(|r| r.info.store_path.to_string()))
    }

    /// Deletes the row and the object under the NAR's lease, once both are checked again
    /// there; a live uploaded narinfo naming it is evicted (the paths returned). `None` when the
    /// lease was held by another; `Some(vec![])` also when the problem was gone meanwhile.
    async fn repair(&self, row: &NarRecord, seen: &Verdict) -> Result<Option<Vec<String>>, FsckError> {
        let lease = LeaseKey::nar(&row.nar_file);
        if let LeaseClaim::Held(_) = self
            .db
            .claim_lease(&lease, self.holder, "", NAR_LEASE_TTL)
            .await?
        {
            return Ok(None);
        }
        let held = hold_lease(Arc::clone(self.db), lease, self.holder.to_owned(), NAR_LEASE_TTL);
        let result = async {
            if self.db.get_nar(&row.nar_file).await?.as_ref() != Some(row) {
                return Ok(Some(vec![]));
            }
            // A verdict from the content is read again; one from the size, stat again.
            let (again, _) = match seen {
                Verdict::Damaged(_) => self.inspect(row).await?,
                _ => (content::stat(self.storage, row).await?, 0),
            };
            if again == Verdict::Intact {
                return Ok(Some(vec![]));
            }
            let evicted = self.evict_uploaded(&row.nar_file).await?;
            self.db.delete_nar(&row.nar_file).await?;
            super::objects::ignore_absent(self.storage.delete(&BlobKey::for_nar(&row.nar_file)).await)?;
            tracing::info!(nar = %row.nar_file.file_name(), "repaired: the broken NAR is forgotten and fetched again when asked for");
            Ok(Some(evicted))
        }
        .await;
        held.release().await;
        result
    }

    /// Evicts the live uploaded narinfos naming `file` while no upstream's does (they answer
    /// `410 Gone` from now on); their store paths.
    async fn evict_uploaded(&self, file: &NarFile) -> Result<Vec<String>, FsckError> {
        let mut evicted = Vec::new();
        while evicted.len() < EVICT_AT_MOST {
            let Some(record) = self.db.narinfo_for_nar(file).await?.filter(|r| r.uploaded()) else {
                break;
            };
            if !self
                .db
                .evict_narinfo(record.info.store_path.hash(), Timestamp::now())
                .await?
            {
                break; // the first is live when any is: none is left
            }
            tracing::error!(store_path = %record.info.store_path, "an uploaded path lost its NAR; push it again");
            evicted.push(record.info.store_path.to_string());
        }
        Ok(evicted)
    }
}
