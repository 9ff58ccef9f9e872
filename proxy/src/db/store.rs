//! One `MetadataStore` for every engine: the SQL comes from `statements.rs`, rows are decoded by
//! `row.rs`, and [`SqlDb`] (in `sql.rs`) is the little each engine's sqlx driver has to offer.

use std::time::Duration;

use async_trait::async_trait;
use nixcache_protocol::{NarFile, StorePathHash};
use sqlx::{
    database::Database, pool::PoolOptions, ConnectOptions, Connection, MySql, Pool, Postgres, Sqlite,
};

use super::{
    row, statements::Statements, AccessCursor, DbError, Engine, Lease, LeaseClaim, LeaseKey, MetadataStore,
    NarAccess, NarInfoRecord, NarRecord, NarinfoAccess, PendingUpload, ProxySignature, SideFileAccess,
    SideFileRecord, Timestamp, UploadRecord, Usage,
};
use crate::redact;

use super::sql::{Arg, SqlDb};

/// The metadata store on SQLite (the embedded default).
pub type SqliteMetadata = SqlStore<Sqlite>;
/// The metadata store on PostgreSQL.
pub type PostgresMetadata = SqlStore<Postgres>;
/// The metadata store on MySQL or MariaDB.
pub type MySqlMetadata = SqlStore<MySql>;

/// How long a query waits for a free connection, or for the server to accept a new one (sqlx
/// retries a refused connection until then, so a database restart shorter than this goes
/// unnoticed). Also the bound on how long a request waits while the database is down before it
/// fails with 503: short, so clients retry rather than hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The metadata store over a connection pool of engine `DB`. Each engine's `open` is in `open.rs`.
pub struct SqlStore<DB: Database> {
    pool: Pool<DB>,
    sql: Statements,
    engine: Engine,
}

impl<DB: SqlDb> SqlStore<DB> {
    pub(super) fn new(pool: Pool<DB>, engine: Engine) -> Self {
        Self {
            pool,
            sql: Statements::new(engine),
            engine,
        }
    }

    /// A pool of at most `max` connections to `url`. One connection is opened first, on its own,
    /// so that a wrong URL or an unreachable server fails at start with the real cause (the
    /// pool would retry until its timeout and report only that).
    pub(super) async fn pool(
        options: <DB::Connection as Connection>::Options,
        max: u32,
        url: &str,
    ) -> Result<Pool<DB>, DbError> {
        let failed = |source| DbError::Connect {
            url: redact::url(url),
            source,
        };
        let probe = tokio::time::timeout(ACQUIRE_TIMEOUT, ConnectOptions::connect(&options))
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))
            .map_err(failed)?;
        let _ = probe.close().await;
        PoolOptions::<DB>::new()
            .max_connections(max)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(failed)
    }

    pub(super) fn engine(&self) -> Engine {
        self.engine
    }

    pub(super) async fn exec(&self, sql: &str, args: Vec<Arg>) -> Result<u64, DbError> {
        Ok(DB::exec(&self.pool, sql, args).await?)
    }

    pub(super) async fn fetch(&self, sql: &str, args: Vec<Arg>) -> Result<Option<DB::Row>, DbError> {
        Ok(DB::fetch(&self.pool, sql, args).await?)
    }

    pub(super) async fn fetch_all(&self, sql: &str, args: Vec<Arg>) -> Result<Vec<DB::Row>, DbError> {
        Ok(DB::fetch_all(&self.pool, sql, args).await?)
    }
}

/// Claims that lose a race with a concurrent release (the row vanished between the two
/// statements) or hit a deadlock are tried again this often.
const CLAIM_ATTEMPTS: usize = 5;

fn is_retryable(err: &DbError) -> bool {
    // 40001: serialization failure (MySQL reports deadlocks so), 40P01: PostgreSQL deadlock.
    matches!(err, DbError::Sqlx(sqlx::Error::Database(e))
        if matches!(e.code().as_deref(), Some("40001" | "40P01")))
}

#[async_trait]
impl<DB: SqlDb> MetadataStore for SqlStore<DB> {
    async fn get_narinfo(&self, hash: &StorePathHash) -> Result<Option<NarInfoRecord>, DbError> {
        let row = self
            .fetch(&self.sql.get_narinfo, vec![hash.to_string().into()])
            .await?;
        row.as_ref().map(row::narinfo::<DB>).transpose()
    }

    async fn put_narinfo(&self, rec: &NarInfoRecord) -> Result<(), DbError> {
        self.exec(&self.sql.put_narinfo, row::narinfo_args(rec, Timestamp::now())?)
            .await?;
        Ok(())
    }

    async fn narinfo_for_nar(&self, file: &NarFile) -> Result<Option<NarInfoRecord>, DbError> {
        let row = self
            .fetch(&self.sql.narinfo_for_nar, vec![file.file_name().into()])
            .await?;
        row.as_ref().map(row::narinfo::<DB>).transpose()
    }

    async fn delete_narinfo(&self, hash: &StorePathHash) -> Result<(), DbError> {
        self.exec(&self.sql.delete_narinfo, vec![hash.to_string().into()])
            .await?;
        Ok(())
    }

    async fn set_proxy_signature(&self, hash: &StorePathHash, sig: &ProxySignature) -> Result<(), DbError> {
        let args = vec![
            sig.public_key.as_str().into(),
            sig.sig.to_string().into(),
            hash.to_string().into(),
        ];
        self.exec(&self.sql.set_proxy_signature, args).await?;
        Ok(())
    }

    async fn get_nar(&self, file: &NarFile) -> Result<Option<NarRecord>, DbError> {
        let row = self
            .fetch(&self.sql.get_nar, vec![file.file_name().into()])
            .await?;
        row.as_ref().map(|r| row::nar::<DB>(r, file)).transpose()
    }

    async fn put_nar(&self, rec: &NarRecord) -> Result<(), DbError> {
        self.exec(&self.sql.put_nar, row::nar_args(rec, Timestamp::now())?)
            .await?;
        Ok(())
    }

    async fn delete_nar(&self, file: &NarFile) -> Result<(), DbError> {
        self.exec(&self.sql.delete_nar, vec![file.file_name().into()])
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), DbError> {
        self.exec("SELECT 1", vec![]).await?;
        Ok(())
    }

    async fn claim_lease(
        &self,
        key: &LeaseKey,
        holder: &str,
        address: &str,
        ttl: Duration,
    ) -> Result<LeaseClaim, DbError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_claim(key, holder, address, ttl).await {
                Ok(Some(claim)) => return Ok(claim),
                Err(err) if !is_retryable(&err) || attempt >= CLAIM_ATTEMPTS => return Err(err),
                // Released between our two statements, or a deadlock victim: try again.
                Ok(None) | Err(_) => tokio::time::sleep(Duration::from_millis(attempt as u64)).await,
            }
        }
    }

    async fn renew_lease(&self, key: &LeaseKey, holder: &str, ttl: Duration) -> Result<bool, DbError> {
        let args = vec![
            (Timestamp::now() + ttl).unix_ms().into(),
            key.as_str().into(),
            holder.into(),
        ];
        // MySQL counts matched rows here (sqlx sets CLIENT_FOUND_ROWS), like the others.
        Ok(self.exec(&self.sql.renew_lease, args).await? >= 1)
    }

    async fn release_lease(&self, key: &LeaseKey, holder: &str) -> Result<(), DbError> {
        let args = vec![key.as_str().into(), holder.into()];
        self.exec(&self.sql.release_lease, args).await?;
        Ok(())
    }

    async fn get_lease(&self, key: &LeaseKey) -> Result<Option<Lease>, DbError> {
        let row = self.fetch(&self.sql.get_lease, vec![key.as_str().into()]).await?;
        row.as_ref().map(|r| row::lease::<DB>(r, key)).transpose()
    }

    async fn delete_expired_leases(&self, before: Timestamp) -> Result<u64, DbError> {
        self.exec(&self.sql.delete_expired_leases, vec![before.unix_ms().into()])
            .await
    }

    async fn record_access(
        &self,
        narinfos: &[StorePathHash],
        nars: &[NarFile],
        at: Timestamp,
        fresh: Timestamp,
    ) -> Result<(), DbError> {
        self.record_access_batched(narinfos, nars, at, fresh).await
    }

    async fn usage(&self) -> Result<Usage, DbError> {
        self.usage_now().await
    }

    async fn least_recent_narinfos(
        &self,
        before: Timestamp,
        after: Option<&AccessCursor>,
        limit: u32,
    ) -> Result<Vec<NarinfoAccess>, DbError> {
        self.narinfos_by_access(before, after, limit).await
    }

    async fn least_recent_orphan_nars(
        &self,
        before: Timestamp,
        after: Option<&AccessCursor>,
        limit: u32,
    ) -> Result<Vec<NarAccess>, DbError> {
        self.orphan_nars_by_access(before, after, limit).await
    }

    async fn count_narinfos_for_nar(&self, file: &NarFile) -> Result<u64, DbError> {
        self.narinfos_naming(file).await
    }

    async fn evict_narinfo(&self, hash: &StorePathHash, at: Timestamp) -> Result<bool, DbError> {
        let args = vec![at.unix_ms().into(), hash.to_string().into()];
        Ok(self.exec(&self.sql.evict_narinfo, args).await? >= 1)
    }

    async fn purge_evicted_narinfos(&self, before: Timestamp) -> Result<u64, DbError> {
        self.exec(&self.sql.purge_evicted_narinfos, vec![before.unix_ms().into()])
            .await
    }

    async fn delete_nar_if_unnamed(&self, file: &NarFile) -> Result<bool, DbError> {
        let args = vec![file.file_name().into(), file.file_name().into()];
        Ok(self.exec(&self.sql.delete_unnamed_nar, args).await? >= 1)
    }

    async fn put_upload(&self, rec: &UploadRecord) -> Result<(), DbError> {
        self.exec(&self.sql.put_upload, row::upload_args(rec, Timestamp::now())?)
            .await?;
        Ok(())
    }

    async fn get_upload(&self, file: &NarFile) -> Result<Option<UploadRecord>, DbError> {
        let row = self
            .fetch(&self.sql.get_upload, vec![file.file_name().into()])
            .await?;
        row.as_ref().map(row::upload::<DB>).transpose()
    }

    async fn delete_upload(&self, file: &NarFile) -> Result<bool, DbError> {
        let deleted = self
            .exec(&self.sql.delete_upload, vec![file.file_name().into()])
            .await?;
        Ok(deleted >= 1)
    }

    async fn delete_stale_upload(&self, file: &NarFile, before: Timestamp) -> Result<bool, DbError> {
        // `created_at` is in seconds.
        let args = vec![file.file_name().into(), before.unix_secs().into()];
        Ok(self.exec(&self.sql.delete_stale_upload, args).await? >= 1)
    }

    async fn stale_uploads(&self, before: Timestamp, limit: u32) -> Result<Vec<UploadRecord>, DbError> {
        let args = vec![before.unix_secs().into(), i64::from(limit).into()];
        let rows = self.fetch_all(&self.sql.stale_uploads, args).await?;
        rows.iter().map(row::upload::<DB>).collect()
    }

    async fn get_side_file(&self, path: &str) -> Result<Option<SideFileRecord>, DbError> {
        let row = self.fetch(&self.sql.get_side_file, vec![path.into()]).await?;
        row.as_ref().map(|r| row::side_file::<DB>(r, path)).transpose()
    }

    async fn put_side_file(&self, rec: &SideFileRecord) -> Result<(), DbError> {
        let args = row::side_file_args(rec, Timestamp::now())?;
        self.exec(&self.sql.put_side_file, args).await?;
        Ok(())
    }

    async fn touch_side_files(&self, paths: &[String], at: Timestamp) -> Result<(), DbError> {
        self.touch_side_files_batched(paths, at).await
    }

    async fn delete_side_file(&self, path: &str) -> Result<bool, DbError> {
        Ok(self.exec(&self.sql.delete_side_file, vec![path.into()]).await? >= 1)
    }

    async fn least_recent_side_files(
        &self,
        before: Timestamp,
        after: Option<&AccessCursor>,
        limit: u32,
    ) -> Result<Vec<SideFileAccess>, DbError> {
        self.side_files_by_access(before, after, limit).await
    }

    async fn nars_after(&self, after: Option<&NarFile>, limit: u32) -> Result<Vec<NarRecord>, DbError> {
        self.nars_page(after, limit).await
    }

    async fn uploads_after(
        &self,
        after: Option<&NarFile>,
        limit: u32,
    ) -> Result<Vec<PendingUpload>, DbError> {
        self.uploads_page(after, limit).await
    }

    async fn side_files_after(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SideFileRecord>, DbError> {
        self.side_files_page(after, limit).await
    }

    async fn uploaded_narinfos_without_nar(
        &self,
        after: Option<&StorePathHash>,
        limit: u32,
    ) -> Result<Vec<NarInfoRecord>, DbError> {
        self.uploaded_narinfos_without_nar_page(after, limit).await
    }

    async fn recorded_among(&self, names: &[String]) -> Result<std::collections::HashSet<String>, DbError> {
        self.recorded_names(names).await
    }
}

impl<DB: SqlDb> SqlStore<DB> {
    /// One claim: the conditional upsert, then the row read back. The lease is ours exactly when
    /// the row names us, which holds on every engine whatever it reports as rows affected.
    /// `None`: the row was released in between.
    async fn try_claim(
        &self,
        key: &LeaseKey,
        holder: &str,
        address: &str,
        ttl: Duration,
    ) -> Result<Option<LeaseClaim>, DbError> {
        let now = Timestamp::now();
        let args = vec![
            key.as_str().into(),
            holder.into(),
            address.into(),
            (now + ttl).unix_ms().into(),
            now.unix_ms().into(),
        ];
        self.exec(&self.sql.claim_lease, args).await?;
        Ok(self.get_lease(key).await?.map(|lease| {
            if lease.holder == holder {
                LeaseClaim::Acquired
            } else {
                LeaseClaim::Held(lease)
            }
        }))
    }
}
