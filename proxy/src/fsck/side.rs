//! The smaller passes: listings and logs (`side_files`), pending uploads, and uploaded
//! narinfos whose NAR is gone.

use nixcache_protocol::{NarFile, StorePathHash};

use super::{FsckError, Run, PAGE};
use crate::{
    db::{PendingUpload, SideFileRecord, Timestamp},
    gc::{
        upload::{sweep_upload, Swept},
        STALE_UPLOAD_AGE,
    },
    storage::BlobKey,
};

/// Uploaded narinfos without their NAR evicted in one run at most; more stop the repairs.
const LOST_NARINFOS_BRAKE: u8 = 16;

impl Run<'_> {
    pub(super) async fn check_side_files(&mut self) -> Result<(), FsckError> {
        let mut after: Option<String> = None;
        loop {
            let page = self.db.side_files_after(after.as_deref(), PAGE).await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.path.clone());
            for row in page {
                self.report.side_files += 1;
                match self.check_side_file(&row).await {
                    Ok(()) => {}
                    Err(FsckError::Storage(err)) => {
                        tracing::warn!(path = %row.path, error = %err, "could not check a listing or log");
                        self.report.unreadable += 1;
                    }
                    Err(err) => return Err(err),
                }
            }
        }
    }

    async fn check_side_file(&mut self, row: &SideFileRecord) -> Result<(), FsckError> {
        // A row names no object it could not be stored under: such a row is not ours to judge.
        let Some(key) = BlobKey::for_side_file_row(&row.path) else {
            return Ok(());
        };
        let found = self.storage.stat(&key).await?;
        // Right, or removed (by GC) since the page was read.
        if found == Some(row.size) || self.db.get_side_file(&row.path).await?.as_ref() != Some(row) {
            return Ok(());
        }
        match found {
            Some(size) => self.report.wrong_size.add(size),
            None => self.report.missing.add(row.size),
        }
        tracing::warn!(path = %row.path, recorded_size = row.size, "a listing or log is missing or the wrong size");
        if row.uploaded && found.is_none() {
            // It exists nowhere else: reported, never dropped (storage may be mounted wrong).
            self.report.lose(row.path.clone());
            return Ok(());
        }
        if !self.repairing() {
            return Ok(());
        }
        // Only the row goes, if it is still this one: side files have no lease, so the object
        // could be one stored anew meanwhile (its new row comes next). It is overwritten when the
        // file is fetched or uploaded again.
        if self.db.get_side_file(&row.path).await?.as_ref() == Some(row) {
            self.db.delete_side_file(&row.path).await?;
            if row.uploaded {
                self.report.lose(row.path.clone());
            }
        }
        self.report.repaired += 1;
        Ok(())
    }

    pub(super) async fn check_uploads(&mut self) -> Result<(), FsckError> {
        let deadline = Timestamp::now() - STALE_UPLOAD_AGE.max(self.options.min_age);
        let mut after: Option<NarFile> = None;
        loop {
            let page = self.db.uploads_after(after.as_ref(), PAGE).await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.upload.nar_file.clone());
            for pending in page {
                self.report.uploads += 1;
                // A younger one may be an upload in progress (its row comes before its object).
                // In whole seconds, as the row and `delete_stale_upload` have it.
                if pending.created_at.unix_secs() >= deadline.unix_secs() {
                    continue;
                }
                self.report.stale_uploads.add(pending.upload.file_size);
                tracing::warn!(nar = %pending.upload.nar_file.file_name(), "an uploaded NAR's narinfo never came");
                if self.repairing() {
                    self.sweep_upload(&pending, deadline).await?;
                }
            }
        }
    }

    /// As GC does ([`sweep_upload`]).
    async fn sweep_upload(&mut self, pending: &PendingUpload, deadline: Timestamp) -> Result<(), FsckError> {
        let file = &pending.upload.nar_file;
        match sweep_upload(self.db, self.storage, self.holder, file, deadline).await? {
            // Gone meanwhile, or uploaded again: nothing is left to do.
            Swept::NotStale | Swept::Deleted { storage_error: None } => self.report.repaired += 1,
            // Unrecorded now: a later run finds the object an orphan.
            Swept::Busy => self.report.busy += 1,
            Swept::Deleted {
                storage_error: Some(err),
            } => {
                tracing::warn!(nar = %file.file_name(), error = %err, "deleting an abandoned upload failed");
                self.report.unreadable += 1;
            }
        }
        Ok(())
    }

    pub(super) async fn check_uploaded_narinfos(&mut self) -> Result<(), FsckError> {
        let (mut after, mut lost): (Option<StorePathHash>, Vec<StorePathHash>) = (None, Vec::new());
        loop {
            let page = self
                .db
                .uploaded_narinfos_without_nar(after.as_ref(), PAGE)
                .await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some(*last.info.store_path.hash());
            for record in page {
                self.report.narinfos_without_nar += 1;
                let path = record.info.store_path.to_string();
                tracing::error!(store_path = %path, nar = %record.nar_file.file_name(),
                    "an uploaded path's NAR is not stored; push it again");
                self.report.lose(path);
                if lost.len() <= usize::from(LOST_NARINFOS_BRAKE) {
                    lost.push(*record.info.store_path.hash());
                }
            }
        }
        self.evict_lost(lost).await
    }

    /// Evicts uploaded narinfos whose NAR is gone, so that pushing the path again brings it
    /// back (a live narinfo would make the push a no-op); its NAR answers `410 Gone` either way.
    /// Not when many are: storage mounted wrong while a replica served makes many.
    async fn evict_lost(&mut self, lost: Vec<StorePathHash>) -> Result<(), FsckError> {
        if self.options.repair && lost.len() > usize::from(LOST_NARINFOS_BRAKE) && !self.report.braked {
            self.brake(self.report.narinfos_without_nar);
        }
        if !self.repairing() {
            return Ok(());
        }
        for hash in lost {
            let Some(record) = self.db.get_narinfo(&hash).await? else {
                self.report.repaired += 1;
                continue;
            };
            // A NAR recorded meanwhile (an upload finishing) keeps it.
            if self.db.get_nar(&record.nar_file).await?.is_none() {
                self.db.evict_narinfo(&hash, Timestamp::now()).await?;
            }
            self.report.repaired += 1;
        }
        Ok(())
    }
}
