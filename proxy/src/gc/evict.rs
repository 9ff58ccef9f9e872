//! The steps of one run: orphan NARs, then narinfos in LRU order, then abandoned uploads.

use std::collections::HashMap;

use nixcache_protocol::NarFile;

use super::{Evicted, Run, PAGE, STALE_UPLOAD_AGE};
use crate::{
    db::{now, now_ms, AccessCursor, DbError, NarinfoAccess},
    storage::BlobKey,
};

impl Run<'_> {
    fn over(&self) -> bool {
        self.report.over_limit()
    }

    pub(super) async fn evict(&mut self) -> Result<(), DbError> {
        if self.over() {
            self.evict_orphans().await?;
        }
        if self.over() {
            self.evict_narinfos().await?;
        }
        Ok(())
    }

    async fn evict_orphans(&mut self) -> Result<(), DbError> {
        let mut cursor: Option<AccessCursor> = None;
        while self.over() {
            let page = (self.db)
                .least_recent_orphan_nars(self.before_ms, cursor.as_ref(), PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            cursor = Some(last.cursor());
            for nar in page {
                if !self.over() {
                    break;
                }
                if self.remove_nar(&nar.nar_file, nar.file_size).await? {
                    self.report.orphans_deleted += 1;
                }
            }
        }
        Ok(())
    }

    async fn evict_narinfos(&mut self) -> Result<(), DbError> {
        // A dry run removes nothing, so it counts which narinfos it would have taken per NAR.
        let mut taken: HashMap<NarFile, u64> = HashMap::new();
        let mut cursor: Option<AccessCursor> = None;
        while self.over() {
            let page = (self.db)
                .least_recent_narinfos(self.before_ms, cursor.as_ref(), PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            cursor = Some(last.cursor());
            for entry in page {
                if !self.over() {
                    break;
                }
                self.evict_narinfo(&entry).await?;
                let Some(nar) = self.db.get_nar(&entry.nar_file).await? else {
                    continue;
                };
                if self.options.dry_run {
                    let n = taken.entry(entry.nar_file.clone()).or_insert(0);
                    *n += 1;
                    if self.db.count_narinfos_for_nar(&entry.nar_file).await? > *n {
                        continue;
                    }
                }
                self.remove_nar(&nar.nar_file, nar.file_size).await?;
            }
        }
        Ok(())
    }

    /// Marks it evicted (an upload's is deleted: its NAR cannot be fetched again).
    async fn evict_narinfo(&mut self, entry: &NarinfoAccess) -> Result<(), DbError> {
        if !self.options.dry_run {
            if entry.uploaded {
                self.db.delete_narinfo(&entry.hash).await?;
            } else {
                self.db.evict_narinfo(&entry.hash, now_ms()).await?;
            }
        }
        (self.on_evict)(Evicted::Narinfo(&entry.hash));
        self.report.narinfos_evicted += 1;
        Ok(())
    }

    /// The row, if no live narinfo names the NAR (in the same statement), then the object.
    /// `false` when a narinfo named it meanwhile and it stays.
    async fn remove_nar(&mut self, file: &NarFile, size: u64) -> Result<bool, DbError> {
        if !self.options.dry_run {
            if !self.db.delete_nar_if_unnamed(file).await? {
                return Ok(false);
            }
            let key = BlobKey::for_nar(file);
            if let Err(err) = self.storage.delete(&key).await {
                tracing::warn!(nar = %key, error = %err, "deleting an evicted NAR from storage failed; it stays unrecorded");
                self.report.storage_errors += 1;
            }
        }
        (self.on_evict)(Evicted::Nar(file));
        self.report.nars_deleted += 1;
        self.report.bytes_freed += size;
        Ok(true)
    }

    /// Uploads abandoned before their narinfo came: never visible, so simply deleted. The
    /// row goes first, in a statement that checks its age, so a narinfo upload that claimed
    /// it meanwhile (and made it a stored NAR) keeps the object.
    pub(super) async fn sweep_stale_uploads(&mut self) -> Result<(), DbError> {
        let before = now() - self.options.keep_recent.max(STALE_UPLOAD_AGE).as_secs() as i64;
        loop {
            let stale = self.db.stale_uploads(before, PAGE).await?;
            if stale.is_empty() {
                return Ok(());
            }
            for upload in stale {
                if !self.db.delete_stale_upload(&upload.nar_file, before).await? {
                    continue;
                }
                if self.db.get_nar(&upload.nar_file).await?.is_none() {
                    let key = BlobKey::for_nar(&upload.nar_file);
                    if let Err(err) = self.storage.delete(&key).await {
                        tracing::warn!(nar = %key, error = %err, "deleting an abandoned upload failed");
                        self.report.storage_errors += 1;
                    }
                }
                self.report.uploads_swept += 1;
            }
        }
    }
}
