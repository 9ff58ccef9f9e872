//! The smaller passes: listings and logs (`side_files`), pending uploads, and uploaded
//! narinfos whose NAR is gone.

use std::sync::Arc;

use nixcache_protocol::{NarFile, StorePathHash};

use super::{FsckError, Run, NAR_LEASE_TTL, PAGE};
use crate::{
    db::{LeaseClaim, LeaseKey, PendingUpload, SideFileRecord, Timestamp},
    gc::STALE_UPLOAD_AGE,
    lease::hold_lease,
    storage::BlobKey,
};

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
        // Side files have no lease: look again just before, so one stored anew meanwhile stays.
        let now = self.db.get_side_file(&row.path).await?;
        if now.as_ref() == Some(row) && self.storage.stat(&key).await? == found {
            self.db.delete_side_file(&row.path).await?;
            super::objects::ignore_absent(self.storage.delete(&key).await)?;
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
                if pending.created_at >= deadline {
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

    /// As GC does: the row first (so a narinfo arriving now finds it gone and says so), then
    /// the object under the NAR's lease unless a row records it again by then.
    async fn sweep_upload(&mut self, pending: &PendingUpload, deadline: Timestamp) -> Result<(), FsckError> {
        let file = &pending.upload.nar_file;
        if !self.db.delete_stale_upload(file, deadline).await? {
            self.report.repaired += 1; // gone meanwhile
            return Ok(());
        }
        let lease = LeaseKey::nar(file);
        if let LeaseClaim::Held(_) = self
            .db
            .claim_lease(&lease, self.holder, "", NAR_LEASE_TTL)
            .await?
        {
            // Unrecorded now: a later run finds the object an orphan.
            self.report.busy += 1;
            return Ok(());
        }
        let held = hold_lease(Arc::clone(self.db), lease, self.holder.to_owned(), NAR_LEASE_TTL);
        let result = async {
            // Uploaded again meanwhile (a new row), or stored: the object is that one's.
            if self.db.get_nar(file).await?.is_none() && self.db.get_upload(file).await?.is_none() {
                super::objects::ignore_absent(self.storage.delete(&BlobKey::for_nar(file)).await)?;
            }
            Ok::<_, FsckError>(())
        }
        .await;
        held.release().await;
        match result {
            Ok(()) => self.report.repaired += 1,
            Err(FsckError::Storage(err)) => {
                tracing::warn!(nar = %file.file_name(), error = %err, "deleting an abandoned upload failed");
                self.report.unreadable += 1;
            }
            Err(err) => return Err(err),
        }
        Ok(())
    }

    pub(super) async fn check_uploaded_narinfos(&mut self) -> Result<(), FsckError> {
        let mut after: Option<StorePathHash> = None;
        loop {
            let page = self
                .db
                .uploaded_narinfos_without_nar(after.as_ref(), PAGE)
                .await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(*last.info.store_path.hash());
            for record in page {
                self.report.narinfos_without_nar += 1;
                let path = record.info.store_path.to_string();
                tracing::error!(store_path = %path, nar = %record.nar_file.file_name(),
                    "an uploaded path's NAR is not stored; push it again");
                self.report.lose(path);
                if !self.repairing() {
                    continue;
                }
                // Evicted, not deleted: a client that cached the narinfo hears `410 Gone`. A
                // NAR recorded meanwhile (an upload finishing) keeps it.
                if self.db.get_nar(&record.nar_file).await?.is_none() {
                    self.db
                        .evict_narinfo(record.info.store_path.hash(), Timestamp::now())
                        .await?;
                }
                self.report.repaired += 1;
            }
        }
    }
}
