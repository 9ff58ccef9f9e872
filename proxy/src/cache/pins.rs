//! Pins asked for over HTTP name a path by its hash: its narinfo is looked up as a client's
//! would be (from an upstream when the cache lacks it), so the pin records the whole store path.

use nixcache_protocol::{StorePath, StorePathHash};

use super::{Cache, CacheError};
use crate::db::MetadataStore;

impl Cache {
    /// The store path of `hash`, from the database, else from an upstream's narinfo (which is
    /// then cached, as any lookup's is). `NotFound` when no upstream has it.
    pub async fn store_path_of(&self, hash: &StorePathHash) -> Result<StorePath, CacheError> {
        if let Some(record) = self.db.get_narinfo(hash).await? {
            return Ok(record.info.store_path);
        }
        if self.negative.contains(hash) {
            return Err(CacheError::NotFound);
        }
        let (record, _) = self.shared_narinfo_lookup(*hash).await?;
        Ok(record.info.store_path.clone())
    }

    /// The metadata store, for pins.
    pub fn metadata(&self) -> &dyn MetadataStore {
        &*self.db
    }
}
