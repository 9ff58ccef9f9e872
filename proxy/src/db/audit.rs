//! Whole-table scans in key order and a batched "which of these objects has a row" lookup, for
//! `nixcache fsck`. Each page starts strictly after the last key of the one before, so a scan
//! holds no cursor open and rows deleted meanwhile (by GC or by fsck's own repairs) are simply
//! not met again.

use std::collections::HashSet;

use nixcache_protocol::{NarFile, StorePathHash};

use super::{
    row::{self, corrupt},
    sql::{Arg, SqlDb},
    statements::{placeholders, NARINFO_COLUMNS},
    store::SqlStore,
    DbError, NarInfoRecord, NarRecord, PendingUpload, SideFileRecord, Timestamp,
};

/// Names per `IN (…)` list: three lists per statement stay far below every engine's limit.
const IN_BATCH: usize = 500;

/// ` WHERE column > ?` (or `AND`, after `glue`) when there is a last key.
fn after_key(glue: &str, column: &str, after: Option<String>, args: &mut Vec<Arg>) -> String {
    match after {
        Some(key) => {
            args.push(key.into());
            format!(" {glue} {column} > ?")
        }
        None => String::new(),
    }
}

impl<DB: SqlDb> SqlStore<DB> {
    fn audit_sql(&self, text: &str) -> String {
        placeholders(self.engine(), text)
    }

    pub(super) async fn nars_page(
        &self,
        after: Option<&NarFile>,
        limit: u32,
    ) -> Result<Vec<NarRecord>, DbError> {
        let mut args = Vec::new();
        let filter = after_key("WHERE", "nar_file", after.map(NarFile::file_name), &mut args);
        args.push(i64::from(limit).into());
        let sql = self.audit_sql(&format!(
            "SELECT nar_file, file_size, nar_hash FROM nars{filter} ORDER BY nar_file LIMIT ?"
        ));
        let rows = self.fetch_all(&sql, args).await?;
        rows.iter()
            .map(|r| {
                let name = DB::text(r, "nar_file")?.unwrap_or_default();
                let file = NarFile::parse(&name).map_err(|e| corrupt(&name, "nar_file", e))?;
                row::nar::<DB>(r, &file)
            })
            .collect()
    }

    pub(super) async fn uploads_page(
        &self,
        after: Option<&NarFile>,
        limit: u32,
    ) -> Result<Vec<PendingUpload>, DbError> {
        let mut args = Vec::new();
        let filter = after_key("WHERE", "nar_file", after.map(NarFile::file_name), &mut args);
        args.push(i64::from(limit).into());
        let sql = self.audit_sql(&format!(
            "SELECT nar_file, file_size, nar_hash, nar_size, created_at FROM uploads{filter} \
             ORDER BY nar_file LIMIT ?"
        ));
        let rows = self.fetch_all(&sql, args).await?;
        rows.iter()
            .map(|r| {
                let upload = row::upload::<DB>(r)?;
                let created = DB::int(r, "created_at")?
                    .ok_or_else(|| corrupt(&upload.nar_file.file_name(), "created_at", "NULL"))?;
                Ok(PendingUpload {
                    upload,
                    created_at: Timestamp::from_unix_ms(created.saturating_mul(1000)),
                })
            })
            .collect()
    }

    pub(super) async fn side_files_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SideFileRecord>, DbError> {
        let mut args = Vec::new();
        let filter = after_key("WHERE", "path", after.map(str::to_owned), &mut args);
        args.push(i64::from(limit).into());
        let uploaded = super::statements::as_int64(self.engine(), "uploaded");
        let sql = self.audit_sql(&format!(
            "SELECT path, encoding, size, {uploaded} AS uploaded FROM side_files{filter} \
             ORDER BY path LIMIT ?"
        ));
        let rows = self.fetch_all(&sql, args).await?;
        rows.iter()
            .map(|r| {
                let path = DB::text(r, "path")?.unwrap_or_default();
                row::side_file::<DB>(r, &path)
            })
            .collect()
    }

    /// Live uploaded narinfos (relative URL) whose NAR has no row and no upstream's narinfo
    /// names (which would fetch it again): the NAR was lost.
    pub(super) async fn uploaded_narinfos_without_nar_page(
        &self,
        after: Option<&StorePathHash>,
        limit: u32,
    ) -> Result<Vec<NarInfoRecord>, DbError> {
        let mut args = Vec::new();
        let filter = after_key("AND", "n.hash", after.map(ToString::to_string), &mut args);
        args.push(i64::from(limit).into());
        let select: Vec<String> = NARINFO_COLUMNS[..15].iter().map(|c| format!("n.{c}")).collect();
        let sql = self.audit_sql(&format!(
            "SELECT {} FROM narinfos n WHERE n.evicted_at IS NULL \
             AND n.upstream_url NOT LIKE '%://%' \
             AND NOT EXISTS (SELECT 1 FROM nars WHERE nars.nar_file = n.nar_file) \
             AND NOT EXISTS (SELECT 1 FROM narinfos u WHERE u.nar_file = n.nar_file \
                 AND u.upstream_url LIKE '%://%'){filter} \
             ORDER BY n.hash LIMIT ?",
            select.join(", ")
        ));
        let rows = self.fetch_all(&sql, args).await?;
        rows.iter().map(row::narinfo::<DB>).collect()
    }

    /// Which of `names` a row records: a stored NAR, a pending upload or a side file.
    pub(super) async fn recorded_names(&self, names: &[String]) -> Result<HashSet<String>, DbError> {
        let mut found = HashSet::new();
        for chunk in names.chunks(IN_BATCH) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = self.audit_sql(&format!(
                "SELECT nar_file AS name FROM nars WHERE nar_file IN ({marks}) \
                 UNION SELECT nar_file AS name FROM uploads WHERE nar_file IN ({marks}) \
                 UNION SELECT path AS name FROM side_files WHERE path IN ({marks})"
            ));
            let args: Vec<Arg> = (0..3)
                .flat_map(|_| chunk.iter().map(|n| Arg::from(n.as_str())))
                .collect();
            for r in self.fetch_all(&sql, args).await? {
                found.extend(DB::text(&r, "name")?);
            }
        }
        Ok(found)
    }
}
