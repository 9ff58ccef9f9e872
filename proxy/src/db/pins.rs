//! Pins: store paths GC never evicts. Their own small trait, a supertrait of
//! [`super::MetadataStore`], so every engine's store has them.

use async_trait::async_trait;
use nixcache_protocol::StorePathHash;

use super::{
    row::{self, corrupt},
    sql::{Arg, SqlDb},
    statements::{as_int64, placeholders, upsert},
    store::SqlStore,
    DbError, PathLinks, PinRecord, Timestamp,
};

const PIN_COLUMNS: [&str; 5] = ["hash", "store_path", "closure", "declared", "created_at"];
/// Hashes per `IN (…)` list of a closure walk.
const IN_BATCH: usize = 500;

#[async_trait]
pub trait PinStore: Send + Sync {
    /// Records a pin, replacing an earlier one of its path.
    async fn put_pin(&self, pin: &PinRecord) -> Result<(), DbError>;
    /// `true` when there was one to delete.
    async fn delete_pin(&self, hash: &StorePathHash) -> Result<bool, DbError>;
    /// Every pin, by hash (their number is bounded where they are added).
    async fn pins(&self) -> Result<Vec<PinRecord>, DbError>;
    async fn get_pin(&self, hash: &StorePathHash) -> Result<Option<PinRecord>, DbError>;
    async fn count_pins(&self) -> Result<u64, DbError>;
    /// The narinfos (live or evicted) of these hashes, with their references, in batches.
    async fn path_links(&self, hashes: &[StorePathHash]) -> Result<Vec<PathLinks>, DbError>;
    /// Like [`super::MetadataStore::evict_narinfo`], but only while the narinfo is unpinned and
    /// was last accessed before `accessed_before` (checked in the same statement: a pin added,
    /// an access, or an upload replacing it since GC planned keeps it).
    async fn evict_unpinned_narinfo(
        &self,
        hash: &StorePathHash,
        at: Timestamp,
        accessed_before: Timestamp,
    ) -> Result<bool, DbError>;
}

#[async_trait]
impl<DB: SqlDb> PinStore for SqlStore<DB> {
    async fn put_pin(&self, pin: &PinRecord) -> Result<(), DbError> {
        let sql = placeholders(self.engine(), &upsert(self.engine(), "pins", &PIN_COLUMNS));
        self.exec(&sql, row::pin_args(pin)).await?;
        Ok(())
    }

    async fn delete_pin(&self, hash: &StorePathHash) -> Result<bool, DbError> {
        let sql = placeholders(self.engine(), "DELETE FROM pins WHERE hash = ?");
        Ok(self.exec(&sql, vec![hash.to_string().into()]).await? >= 1)
    }

    async fn pins(&self) -> Result<Vec<PinRecord>, DbError> {
        let rows = self
            .fetch_all(&self.select_pins(" ORDER BY hash"), vec![])
            .await?;
        rows.iter().map(row::pin::<DB>).collect()
    }

    async fn get_pin(&self, hash: &StorePathHash) -> Result<Option<PinRecord>, DbError> {
        let sql = self.select_pins(" WHERE hash = ?");
        let row = self.fetch(&sql, vec![hash.to_string().into()]).await?;
        row.as_ref().map(row::pin::<DB>).transpose()
    }

    async fn count_pins(&self) -> Result<u64, DbError> {
        let row = self.fetch("SELECT COUNT(*) AS n FROM pins", vec![]).await?;
        let n = match &row {
            Some(r) => DB::int(r, "n")?.unwrap_or(0),
            None => 0,
        };
        u64::try_from(n).map_err(|e| corrupt("pins", "count", e))
    }

    async fn path_links(&self, hashes: &[StorePathHash]) -> Result<Vec<PathLinks>, DbError> {
        let mut found = Vec::with_capacity(hashes.len());
        for chunk in hashes.chunks(IN_BATCH) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = placeholders(
                self.engine(),
                &format!(
                    "SELECT hash, refs, file_size, nar_size, evicted_at FROM narinfos WHERE hash IN ({marks})"
                ),
            );
            let args: Vec<Arg> = chunk.iter().map(|h| h.to_string().into()).collect();
            for r in self.fetch_all(&sql, args).await? {
                found.push(row::path_links::<DB>(&r)?);
            }
        }
        Ok(found)
    }

    async fn evict_unpinned_narinfo(
        &self,
        hash: &StorePathHash,
        at: Timestamp,
        accessed_before: Timestamp,
    ) -> Result<bool, DbError> {
        let sql = placeholders(
            self.engine(),
            "UPDATE narinfos SET evicted_at = ? WHERE hash = ? AND evicted_at IS NULL \
             AND last_access < ? AND NOT EXISTS (SELECT 1 FROM pins WHERE pins.hash = narinfos.hash)",
        );
        let args = vec![
            at.unix_ms().into(),
            hash.to_string().into(),
            accessed_before.unix_ms().into(),
        ];
        Ok(self.exec(&sql, args).await? >= 1)
    }
}

impl<DB: SqlDb> SqlStore<DB> {
    fn select_pins(&self, rest: &str) -> String {
        let engine = self.engine();
        placeholders(
            engine,
            &format!(
                "SELECT hash, store_path, {} AS closure, {} AS declared, created_at FROM pins{rest}",
                as_int64(engine, "closure"),
                as_int64(engine, "declared"),
            ),
        )
    }
}
