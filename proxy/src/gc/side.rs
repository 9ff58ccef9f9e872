//! Listings, logs and build traces go first, least recently used first: they are small, seldom
//! read, and fetched again on demand, while the NARs are what the cache is for. Uploaded ones
//! cannot be fetched again, but go the same way, as uploaded NARs do (unless `keep_uploads`).
//! The listings of pinned paths stay.

use nixcache_protocol::StorePathHash;

use super::{Run, PAGE};
use crate::{
    db::{DbError, SideFileAccess},
    storage::BlobKey,
};

impl Run<'_> {
    pub(super) async fn evict_side_files(&mut self) -> Result<(), DbError> {
        let mut cursor = None;
        while self.report.over_limit() {
            let page = (self.db)
                .least_recent_side_files(self.before, cursor.as_ref(), PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            cursor = Some(last.cursor());
            for file in page {
                if !self.report.over_limit() {
                    break;
                }
                if self.keeps_side_file(&file) {
                    continue;
                }
                if !self.options.dry_run {
                    if !self.db.delete_side_file(&file.path).await? {
                        continue; // another run took it
                    }
                    // The row goes first: an object left by a failed delete is invisible, and
                    // overwritten when the file is fetched or uploaded again. The key is parsed
                    // again: a row is not trusted to name a safe object.
                    let Some(key) = BlobKey::for_side_file_row(&file.path) else {
                        tracing::warn!(path = %file.path, "a side file row with an invalid path; its row went, no object is deleted");
                        continue;
                    };
                    if let Err(err) = self.storage.delete(&key).await {
                        tracing::warn!(object = %key, error = %err, "deleting an evicted listing or log failed");
                        self.report.storage_errors += 1;
                    }
                }
                self.report.side_files_deleted += 1;
                self.report.bytes_freed += file.size;
            }
        }
        Ok(())
    }
}

impl Run<'_> {
    /// An uploaded file under `keep_uploads`, or the listing (`<hash>.ls`) of a pinned path.
    fn keeps_side_file(&self, file: &SideFileAccess) -> bool {
        let listed = file
            .path
            .strip_suffix(".ls")
            .and_then(|h| StorePathHash::parse(h).ok());
        (file.uploaded && self.options.keep_uploads) || listed.is_some_and(|h| self.pinned.holds(&h))
    }
}
