//! Metadata: which narinfos we know and which NAR files we hold. Named operations returning domain
//! types; one generic implementation (`store.rs`) runs them on SQLite, PostgreSQL and MySQL/MariaDB
//! with the few dialect differences in `statements.rs`.

mod audit;
mod engine;
mod lru;
pub mod migrate;
mod model;
mod open;
mod pins;
mod row;
mod sql;
mod statements;
mod store;
#[cfg(any(test, feature = "test-util"))]
pub mod testdb;
#[cfg(test)]
mod tests;
mod time;
mod upkeep;
mod verified;

use std::time::Duration;

use async_trait::async_trait;
use nixcache_protocol::{NarFile, StorePathHash};

pub use engine::Engine;
pub use model::{
    AccessCursor, Lease, LeaseClaim, LeaseKey, NarAccess, NarInfoRecord, NarRecord, NarinfoAccess, PathLinks,
    PendingUpload, PinRecord, ProxySignature, SideFileAccess, SideFileRecord, UploadRecord, Usage,
};
pub use pins::PinStore;
pub use store::{MySqlMetadata, PostgresMetadata, SqliteMetadata};
pub use time::Timestamp;
pub use upkeep::{UpkeepKind, UpkeepRecord, UpkeepRun, UpkeepStore};
pub use verified::{NarVerification, VerifiedStore};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("cannot connect to the database {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating the database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "database {url} is not migrated ({pending} pending migrations): \
         run `nixcache migrate --database-url {url}`"
    )]
    NotMigrated { url: String, pending: usize },
    #[error(
        "database {url} has migration {version} applied, which this nixcache does not know \
         (the schema is newer): run a nixcache at least as new as the one that migrated it"
    )]
    UnknownMigration { url: String, version: i64 },
    #[error("database {url}: migration {version} {problem}")]
    BadMigration {
        url: String,
        version: i64,
        problem: &'static str,
    },
    #[error("database row for {key} has an invalid {field}: {reason}")]
    Corrupt {
        key: String,
        field: &'static str,
        reason: String,
    },
    #[error(
        "unsupported database URL {0}: use sqlite://PATH, postgres://USER@HOST/DB or mysql://USER@HOST/DB"
    )]
    UnsupportedUrl(String),
}

/// The metadata store every engine implements; `tests.rs` holds the conformance suite.
#[async_trait]
pub trait MetadataStore: PinStore + UpkeepStore + VerifiedStore + Send + Sync + 'static {
    async fn get_narinfo(&self, hash: &StorePathHash) -> Result<Option<NarInfoRecord>, DbError>;
    /// Inserts or replaces the narinfo for its store path hash.
    async fn put_narinfo(&self, record: &NarInfoRecord) -> Result<(), DbError>;
    /// Some narinfo whose NAR is `file` (several may share one).
    async fn narinfo_for_nar(&self, file: &NarFile) -> Result<Option<NarInfoRecord>, DbError>;
    /// Forgets a narinfo (one that proved wrong); its NAR file, if stored, stays.
    async fn delete_narinfo(&self, hash: &StorePathHash) -> Result<(), DbError>;
    async fn set_proxy_signature(&self, hash: &StorePathHash, sig: &ProxySignature) -> Result<(), DbError>;
    async fn get_nar(&self, file: &NarFile) -> Result<Option<NarRecord>, DbError>;
    /// Records that the NAR is stored, after the blob is in place.
    async fn put_nar(&self, record: &NarRecord) -> Result<(), DbError>;
    async fn delete_nar(&self, file: &NarFile) -> Result<(), DbError>;
    async fn ping(&self) -> Result<(), DbError>;

    /// Takes the lease when it is free, expired or already `holder`'s; else says who holds it.
    /// One short statement or transaction: no lock outlives the call.
    async fn claim_lease(
        &self,
        key: &LeaseKey,
        holder: &str,
        address: &str,
        ttl: Duration,
    ) -> Result<LeaseClaim, DbError>;
    /// Like [`Self::claim_lease`], but first reads the lease, and when it is live and another's
    /// says so without writing. For a replica waiting on another's lease and polling it: a claim
    /// is an upsert (on SQLite a turn at the single writer), a read is not.
    async fn claim_lease_if_free(
        &self,
        key: &LeaseKey,
        holder: &str,
        address: &str,
        ttl: Duration,
    ) -> Result<LeaseClaim, DbError> {
        match self.get_lease(key).await? {
            // The claim's own condition, `expires_at < now`, read the other way.
            Some(lease) if lease.holder != holder && lease.expires_at >= Timestamp::now() => {
                Ok(LeaseClaim::Held(lease))
            }
            _ => self.claim_lease(key, holder, address, ttl).await,
        }
    }
    /// Extends `holder`'s lease; `false` when it is no longer theirs (expired and taken over).
    async fn renew_lease(&self, key: &LeaseKey, holder: &str, ttl: Duration) -> Result<bool, DbError>;
    /// Gives the lease up, if `holder` still has it.
    async fn release_lease(&self, key: &LeaseKey, holder: &str) -> Result<(), DbError>;
    /// The current lease, expired or not.
    async fn get_lease(&self, key: &LeaseKey) -> Result<Option<Lease>, DbError>;
    /// Deletes the leases that expired before `before` (left behind by replicas that died).
    async fn delete_expired_leases(&self, before: Timestamp) -> Result<u64, DbError>;

    /// Sets the last access of these narinfos, of these NARs and of the narinfos naming them
    /// to `at`, in a few batched statements; rows accessed at or after `fresh` already (by
    /// another replica) are left as they are.
    async fn record_access(
        &self,
        narinfos: &[StorePathHash],
        nars: &[NarFile],
        at: Timestamp,
        fresh: Timestamp,
    ) -> Result<(), DbError>;
    async fn usage(&self) -> Result<Usage, DbError>;
    /// Up to `limit` narinfos last accessed before `before`, least recent first, after `after`.
    async fn least_recent_narinfos(
        &self,
        before: Timestamp,
        after: Option<&AccessCursor>,
        limit: u32,
    ) -> Result<Vec<NarinfoAccess>, DbError>;
    /// Like `least_recent_narinfos`, for stored NARs that no narinfo names.
    async fn least_recent_orphan_nars(
        &self,
        before: Timestamp,
        after: Option<&AccessCursor>,
        limit: u32,
    ) -> Result<Vec<NarAccess>, DbError>;
    /// Live (not evicted) narinfos naming `file`.
    async fn count_narinfos_for_nar(&self, file: &NarFile) -> Result<u64, DbError>;
    /// Marks a narinfo evicted at `at`: no longer a hit, but still found by
    /// `narinfo_for_nar`. `false` when it was not live.
    async fn evict_narinfo(&self, hash: &StorePathHash, at: Timestamp) -> Result<bool, DbError>;
    /// Deletes narinfos evicted before `before`.
    async fn purge_evicted_narinfos(&self, before: Timestamp) -> Result<u64, DbError>;
    /// Deletes the NAR row if no live narinfo names it (checked in the same statement, so a
    /// narinfo recorded meanwhile keeps it); `true` when it was deleted.
    async fn delete_nar_if_unnamed(&self, file: &NarFile) -> Result<bool, DbError>;

    /// Records an uploaded NAR awaiting its narinfo (replacing an earlier record of it).
    async fn put_upload(&self, record: &UploadRecord) -> Result<(), DbError>;
    async fn get_upload(&self, file: &NarFile) -> Result<Option<UploadRecord>, DbError>;
    /// `true` when there was one to delete.
    async fn delete_upload(&self, file: &NarFile) -> Result<bool, DbError>;
    /// Deletes the upload if it was recorded before `before`; `true` when it was.
    async fn delete_stale_upload(&self, file: &NarFile, before: Timestamp) -> Result<bool, DbError>;
    /// Up to `limit` uploads recorded before `before` whose narinfo never came.
    async fn stale_uploads(&self, before: Timestamp, limit: u32) -> Result<Vec<UploadRecord>, DbError>;

    /// The side file (NAR listing or build log) stored under `path` (no leading slash).
    async fn get_side_file(&self, path: &str) -> Result<Option<SideFileRecord>, DbError>;
    /// Records a side file, after its bytes are in place (replacing an earlier record of its
    /// path); created and accessed now.
    async fn put_side_file(&self, record: &SideFileRecord) -> Result<(), DbError>;
    /// Sets these side files' last access to `at` (in batched statements); nothing for paths
    /// that have none.
    async fn touch_side_files(&self, paths: &[String], at: Timestamp) -> Result<(), DbError>;
    /// `true` when there was one to delete.
    async fn delete_side_file(&self, path: &str) -> Result<bool, DbError>;
    /// Up to `limit` side files last accessed before `before`, least recent first (ties by
    /// path), after `after`.
    async fn least_recent_side_files(
        &self,
        before: Timestamp,
        after: Option<&AccessCursor>,
        limit: u32,
    ) -> Result<Vec<SideFileAccess>, DbError>;

    // Scans in key order for `nixcache fsck`: up to `limit` rows after the key `after`.
    async fn nars_after(&self, after: Option<&NarFile>, limit: u32) -> Result<Vec<NarRecord>, DbError>;
    async fn uploads_after(&self, after: Option<&NarFile>, limit: u32)
        -> Result<Vec<PendingUpload>, DbError>;
    async fn side_files_after(&self, after: Option<&str>, limit: u32)
        -> Result<Vec<SideFileRecord>, DbError>;
    /// Live narinfos a client uploaded whose NAR has no row and no upstream's narinfo names (lost:
    /// nothing can fetch it again).
    async fn uploaded_narinfos_without_nar(
        &self,
        after: Option<&StorePathHash>,
        limit: u32,
    ) -> Result<Vec<NarInfoRecord>, DbError>;
    /// Which of these object names (NAR files, side file paths) a row records.
    async fn recorded_among(&self, names: &[String]) -> Result<std::collections::HashSet<String>, DbError>;
}

/// Opens the metadata store named by `url`. SQLite is migrated on the spot; PostgreSQL and MySQL
/// must have been migrated by `nixcache migrate` (several replicas share them), else this fails
/// with [`DbError::NotMigrated`].
pub async fn connect(url: &str) -> Result<std::sync::Arc<dyn MetadataStore>, DbError> {
    Ok(match Engine::from_url(url)? {
        Engine::Sqlite => std::sync::Arc::new(SqliteMetadata::open(url).await?),
        Engine::Postgres => std::sync::Arc::new(PostgresMetadata::open(url).await?),
        Engine::MySql => std::sync::Arc::new(MySqlMetadata::open(url).await?),
    })
}
