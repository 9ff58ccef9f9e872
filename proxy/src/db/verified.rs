//! When the background scrub last looked at each stored NAR and last found it intact, and the
//! NARs in the order it takes them: looked at longest ago first (never first).

use async_trait::async_trait;
use nixcache_protocol::NarFile;

use super::{
    row::corrupt,
    sql::{Arg, SqlDb},
    statements::placeholders,
    store::SqlStore,
    DbError, Timestamp,
};

/// A stored NAR and when the scrub last looked at it and last found it intact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarVerification {
    pub nar_file: NarFile,
    pub file_size: u64,
    /// Unix milliseconds; 0: never.
    pub checked_at: Timestamp,
    pub verified_at: Timestamp,
}

#[async_trait]
pub trait VerifiedStore: Send + Sync {
    /// Up to `limit` stored NARs last looked at before `before`, longest ago first (ties by
    /// name), after `after`.
    async fn nars_by_check(
        &self,
        before: Timestamp,
        after: Option<&NarVerification>,
        limit: u32,
    ) -> Result<Vec<NarVerification>, DbError>;
    /// Records that the scrub looked at the NAR at `at`, and whether it found it intact; `false`
    /// when it has no row.
    async fn mark_nar_checked(&self, file: &NarFile, at: Timestamp, intact: bool) -> Result<bool, DbError>;
}

#[async_trait]
impl<DB: SqlDb> VerifiedStore for SqlStore<DB> {
    async fn nars_by_check(
        &self,
        before: Timestamp,
        after: Option<&NarVerification>,
        limit: u32,
    ) -> Result<Vec<NarVerification>, DbError> {
        let mut args: Vec<Arg> = vec![before.unix_ms().into()];
        let filter = match after {
            Some(last) => {
                let at = last.checked_at.unix_ms();
                args.extend([at.into(), at.into(), last.nar_file.file_name().into()]);
                " AND (checked_at > ? OR (checked_at = ? AND nar_file > ?))"
            }
            None => "",
        };
        args.push(i64::from(limit).into());
        let sql = placeholders(
            self.engine(),
            &format!(
                "SELECT nar_file, file_size, checked_at, verified_at FROM nars WHERE checked_at < ?{filter} \
                 ORDER BY checked_at, nar_file LIMIT ?"
            ),
        );
        let rows = self.fetch_all(&sql, args).await?;
        rows.iter()
            .map(|r| {
                let name = DB::text(r, "nar_file")?.unwrap_or_default();
                let nar_file = NarFile::parse(&name).map_err(|e| corrupt(&name, "nar_file", e))?;
                let size = DB::int(r, "file_size")?.unwrap_or(-1);
                let file_size = u64::try_from(size).map_err(|e| corrupt(&name, "file_size", e))?;
                let at = |column: &'static str| {
                    let ms = DB::int(r, column)?.ok_or_else(|| corrupt(&name, column, "NULL"))?;
                    Ok::<_, DbError>(Timestamp::from_unix_ms(ms))
                };
                Ok(NarVerification {
                    nar_file,
                    file_size,
                    checked_at: at("checked_at")?,
                    verified_at: at("verified_at")?,
                })
            })
            .collect()
    }

    async fn mark_nar_checked(&self, file: &NarFile, at: Timestamp, intact: bool) -> Result<bool, DbError> {
        let (sql, mut args): (_, Vec<Arg>) = if intact {
            let sql = "UPDATE nars SET checked_at = ?, verified_at = ? WHERE nar_file = ?";
            (sql, vec![at.unix_ms().into(), at.unix_ms().into()])
        } else {
            (
                "UPDATE nars SET checked_at = ? WHERE nar_file = ?",
                vec![at.unix_ms().into()],
            )
        };
        args.push(file.file_name().into());
        Ok(self.exec(&placeholders(self.engine(), sql), args).await? >= 1)
    }
}
