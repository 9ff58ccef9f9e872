//! Access times and least-recently-used scans, for `nixcache gc`. Accesses arrive in batches
//! (`cache::access`), so each is a few `UPDATE … WHERE key IN (…)` statements, not one per hit.

use nixcache_protocol::{NarFile, StorePathHash};

use super::{
    row::corrupt,
    sql::{Arg, SqlDb},
    statements::placeholders,
    store::SqlStore,
    AccessCursor, DbError, Engine, NarAccess, NarinfoAccess, SideFileAccess, Timestamp, Usage,
};

/// Keys per `IN (…)` list: far below every engine's limit on bound parameters.
const IN_BATCH: usize = 500;

/// `SUM(size) AS bytes, COUNT(*) AS n` of a table. `SUM` is a NUMERIC on PostgreSQL and a DECIMAL
/// on MySQL: cast back to a 64-bit integer.
fn sum_sql(engine: Engine, table: &str, size: &str) -> String {
    let sum = format!("COALESCE(SUM({size}), 0)");
    let bytes = match engine {
        Engine::Sqlite => sum,
        Engine::Postgres => format!("CAST({sum} AS BIGINT)"),
        Engine::MySql => format!("CAST({sum} AS SIGNED)"),
    };
    format!("SELECT {bytes} AS bytes, COUNT(*) AS n FROM {table}")
}

/// `AND (last_access, key) > cursor`, spelled out so every engine can use the index.
fn after_clause(column: &str, after: Option<&AccessCursor>, args: &mut Vec<Arg>) -> String {
    let Some(c) = after else {
        return String::new();
    };
    args.extend([
        c.last_access.unix_ms().into(),
        c.last_access.unix_ms().into(),
        c.key.as_str().into(),
    ]);
    format!(" AND (last_access > ? OR (last_access = ? AND {column} > ?))")
}

/// A count or sum read back, absent when there were no rows.
fn count(v: Option<i64>, what: &'static str) -> Result<u64, DbError> {
    u64::try_from(v.unwrap_or(0)).map_err(|e| corrupt("usage", what, e))
}

impl<DB: SqlDb> SqlStore<DB> {
    fn sql(&self, text: &str) -> String {
        placeholders(self.engine(), text)
    }

    /// `UPDATE table SET last_access = at WHERE last_access < fresh AND column IN (keys)`.
    async fn update_in(
        &self,
        table: &str,
        column: &str,
        keys: Vec<String>,
        at: Timestamp,
        fresh: Timestamp,
    ) -> Result<(), DbError> {
        for chunk in keys.chunks(IN_BATCH) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = self.sql(&format!(
                "UPDATE {table} SET last_access = ? WHERE last_access < ? AND {column} IN ({marks})"
            ));
            let mut args: Vec<Arg> = vec![at.unix_ms().into(), fresh.unix_ms().into()];
            args.extend(chunk.iter().map(|k| Arg::from(k.as_str())));
            self.exec(&sql, args).await?;
        }
        Ok(())
    }

    pub(super) async fn record_access_batched(
        &self,
        narinfos: &[StorePathHash],
        nars: &[NarFile],
        at: Timestamp,
        fresh: Timestamp,
    ) -> Result<(), DbError> {
        // Sorted, so replicas flushing at once lock rows in the same order.
        let mut hashes: Vec<String> = narinfos.iter().map(ToString::to_string).collect();
        let mut files: Vec<String> = nars.iter().map(NarFile::file_name).collect();
        hashes.sort();
        files.sort();
        self.update_in("narinfos", "hash", hashes, at, fresh).await?;
        self.update_in("nars", "nar_file", files.clone(), at, fresh)
            .await?;
        // A client with the narinfo in its own cache asks only for the NAR: that counts too.
        self.update_in("narinfos", "nar_file", files, at, fresh).await
    }

    pub(super) async fn usage_now(&self) -> Result<Usage, DbError> {
        let (nar_bytes, nars) = self.sum("nars", "file_size").await?;
        let (side_bytes, side_files) = self.sum("side_files", "size").await?;
        let narinfos = self
            .fetch(
                "SELECT COUNT(*) AS n FROM narinfos WHERE evicted_at IS NULL",
                vec![],
            )
            .await?;
        let narinfo_count = match &narinfos {
            Some(row) => DB::int(row, "n")?,
            None => None,
        };
        Ok(Usage {
            nar_bytes,
            nars,
            narinfos: count(narinfo_count, "narinfos")?,
            side_files,
            side_bytes,
        })
    }

    /// The sum of `size` over `table`'s rows, and how many rows there are.
    async fn sum(&self, table: &'static str, size: &str) -> Result<(u64, u64), DbError> {
        let row = self.fetch(&sum_sql(self.engine(), table, size), vec![]).await?;
        let (bytes, n) = match &row {
            Some(row) => (DB::int(row, "bytes")?, DB::int(row, "n")?),
            None => (None, None),
        };
        Ok((count(bytes, "bytes")?, count(n, table)?))
    }

    pub(super) async fn narinfos_by_access(
        &self,
        before: Timestamp,
        after: Option<&AccessCursor>,
        limit: u32,
    ) -> Result<Vec<NarinfoAccess>, DbError> {
        let mut args: Vec<Arg> = vec![before.unix_ms().into()];
        let after = after_clause("hash", after, &mut args);
        args.push(i64::from(limit).into());
        let sql = self.sql(&format!(
            "SELECT hash, nar_file, last_access, upstream_url FROM narinfos \
             WHERE last_access < ? AND evicted_at IS NULL{after} ORDER BY last_access, hash LIMIT ?"
        ));
        let rows = self.fetch_all(&sql, args).await?;
        rows.iter()
            .map(|row| {
                let hash = DB::text(row, "hash")?.unwrap_or_default();
                let file = DB::text(row, "nar_file")?.unwrap_or_default();
                let url = DB::text(row, "upstream_url")?.unwrap_or_default();
                Ok(NarinfoAccess {
                    hash: hash.parse().map_err(|e| corrupt(&hash, "hash", e))?,
                    nar_file: NarFile::parse(&file).map_err(|e| corrupt(&hash, "nar_file", e))?,
                    last_access: Timestamp::from_unix_ms(DB::int(row, "last_access")?.unwrap_or(0)),
                    uploaded: super::model::is_uploaded_url(&url),
                })
            })
            .collect()
    }

    /// Side files by last access: the statement of `least_recent_side_files`.
    pub(super) async fn side_files_by_access(
        &self,
        before: Timestamp,
        after: Option<&AccessCursor>,
        limit: u32,
    ) -> Result<Vec<SideFileAccess>, DbError> {
        let mut args: Vec<Arg> = vec![before.unix_ms().into()];
        let after = after_clause("path", after, &mut args);
        args.push(i64::from(limit).into());
        let uploaded = super::statements::as_int64(self.engine(), "uploaded");
        let sql = self.sql(&format!(
            "SELECT path, size, {uploaded} AS uploaded, last_access FROM side_files \
             WHERE last_access < ?{after} ORDER BY last_access, path LIMIT ?"
        ));
        let rows = self.fetch_all(&sql, args).await?;
        rows.iter().map(super::row::side_file_access::<DB>).collect()
    }

    /// `UPDATE side_files SET last_access = at WHERE path IN (paths)`, sorted, in batches.
    pub(super) async fn touch_side_files_batched(
        &self,
        paths: &[String],
        at: Timestamp,
    ) -> Result<(), DbError> {
        let mut paths = paths.to_vec();
        paths.sort();
        // No row is too fresh to set (a test may also set an earlier time).
        let never = Timestamp::from_unix_ms(i64::MAX);
        self.update_in("side_files", "path", paths, at, never).await
    }

    pub(super) async fn orphan_nars_by_access(
        &self,
        before: Timestamp,
        after: Option<&AccessCursor>,
        limit: u32,
    ) -> Result<Vec<NarAccess>, DbError> {
        let mut args: Vec<Arg> = vec![before.unix_ms().into()];
        let after = after_clause("nar_file", after, &mut args);
        args.push(i64::from(limit).into());
        let sql = self.sql(&format!(
            "SELECT nar_file, file_size, last_access FROM nars WHERE last_access < ?{after} \
             AND NOT EXISTS (SELECT 1 FROM narinfos WHERE narinfos.nar_file = nars.nar_file \
             AND narinfos.evicted_at IS NULL) \
             ORDER BY last_access, nar_file LIMIT ?"
        ));
        let rows = self.fetch_all(&sql, args).await?;
        rows.iter()
            .map(|row| {
                let file = DB::text(row, "nar_file")?.unwrap_or_default();
                let size = DB::int(row, "file_size")?.unwrap_or(0);
                Ok(NarAccess {
                    nar_file: NarFile::parse(&file).map_err(|e| corrupt(&file, "nar_file", e))?,
                    file_size: u64::try_from(size).map_err(|e| corrupt(&file, "file_size", e))?,
                    last_access: Timestamp::from_unix_ms(DB::int(row, "last_access")?.unwrap_or(0)),
                })
            })
            .collect()
    }

    pub(super) async fn narinfos_naming(&self, file: &NarFile) -> Result<u64, DbError> {
        let sql = self.sql("SELECT COUNT(*) AS n FROM narinfos WHERE nar_file = ? AND evicted_at IS NULL");
        let row = self.fetch(&sql, vec![file.file_name().into()]).await?;
        let n = match &row {
            Some(row) => DB::int(row, "n")?.unwrap_or(0),
            None => 0,
        };
        u64::try_from(n).map_err(|e| corrupt(&file.file_name(), "count", e))
    }
}
