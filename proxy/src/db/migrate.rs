//! Schema migrations, one directory per engine under `migrations/` with the same versions and
//! names in each. `nixcache migrate` applies them ([`run`]); `serve` applies them itself only on
//! SQLite, and on PostgreSQL/MySQL refuses a database that is behind or ahead ([`check`]).
//!
//! [`run`] holds the engine's migration lock (`pg_advisory_lock`, MySQL `GET_LOCK`) on one
//! connection for the few statements of the migration, so replicas or Jobs may run it at once:
//! the first applies, the others wait and then find nothing to do.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use sqlx::{
    migrate::{AppliedMigration, Migrate, Migration, Migrator},
    ConnectOptions, Connection, MySqlConnection, PgConnection, Pool, SqliteConnection,
};

use super::{engine, sql::SqlDb, DbError, Engine};
use crate::redact;

pub static SQLITE: Migrator = sqlx::migrate!("../migrations/sqlite");
pub static POSTGRES: Migrator = sqlx::migrate!("../migrations/postgres");
pub static MYSQL: Migrator = sqlx::migrate!("../migrations/mysql");

/// The migrations this binary knows for `engine`.
pub fn migrator(engine: Engine) -> &'static Migrator {
    match engine {
        Engine::Sqlite => &SQLITE,
        Engine::Postgres => &POSTGRES,
        Engine::MySql => &MYSQL,
    }
}

/// A migration that [`run`] applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub version: i64,
    pub description: String,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04} {}", self.version, self.description)
    }
}

/// Applies the pending migrations to the database at `url` over one connection, and returns the
/// ones this call applied (none: the database was up to date).
pub async fn run(url: &str) -> Result<Vec<Applied>, DbError> {
    let engine = Engine::from_url(url)?;
    match engine {
        Engine::Sqlite => run_with(engine::sqlite_options(url)?, engine, url).await,
        Engine::Postgres => run_with(engine::postgres_options(url)?, engine, url).await,
        Engine::MySql => run_with(engine::mysql_options(url)?, engine, url).await,
    }
}

/// What `nixcache migrate` prints: one line per migration applied, or that there was none.
pub fn report(url: &str, applied: &[Applied]) -> String {
    if applied.is_empty() {
        return format!("database {} is up to date", redact::url(url));
    }
    let lines: Vec<_> = applied.iter().map(|a| format!("applied {a}")).collect();
    format!(
        "{}\ndatabase {} is up to date",
        lines.join("\n"),
        redact::url(url)
    )
}

async fn run_with<O>(options: O, engine: Engine, url: &str) -> Result<Vec<Applied>, DbError>
where
    O: ConnectOptions,
    O::Connection: MigrationLock + Sized,
{
    let mut conn = options.connect().await.map_err(|source| DbError::Connect {
        url: redact::url(url),
        source,
    })?;
    let applied = apply(&mut conn, migrator(engine)).await;
    // Closing also ends the session, and with it the lock should `apply` have failed.
    let _ = conn.close().await;
    applied.map_err(|e| e.at(url))
}

/// A database's migrations that rule out working on it.
#[derive(Debug)]
pub(super) enum Refusal {
    /// Applied, but unknown to this nixcache (a newer one migrated the database).
    Unknown(i64),
    /// Ours, but in a state that needs a human.
    Bad(i64, &'static str),
}

/// What applying or planning migrations fails with, before the database is named: the caller,
/// which knows its URL, names it (`at`).
#[derive(Debug)]
pub(super) enum Failure {
    Db(DbError),
    Refused(Refusal),
}

impl Failure {
    pub(super) fn at(self, url: &str) -> DbError {
        match self {
            Self::Db(err) => err,
            Self::Refused(Refusal::Unknown(version)) => DbError::UnknownMigration {
                url: redact::url(url),
                version,
            },
            Self::Refused(Refusal::Bad(version, problem)) => DbError::BadMigration {
                url: redact::url(url),
                version,
                problem,
            },
        }
    }
}

impl From<DbError> for Failure {
    fn from(err: DbError) -> Self {
        Self::Db(err)
    }
}

impl From<sqlx::Error> for Failure {
    fn from(err: sqlx::Error) -> Self {
        Self::Db(err.into())
    }
}

impl From<sqlx::migrate::MigrateError> for Failure {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        Self::Db(err.into())
    }
}

/// Takes the migration lock, applies what is pending, and lets go of the lock.
pub(super) async fn apply<C: MigrationLock>(
    conn: &mut C,
    migrator: &Migrator,
) -> Result<Vec<Applied>, Failure> {
    conn.lock_migrations().await?;
    let result = apply_locked(conn, migrator).await;
    let unlocked = conn.unlock_migrations().await;
    let applied = result?;
    unlocked?;
    Ok(applied)
}

/// The lock that serializes concurrent migrations of one database, held by one session. sqlx's
/// by default: a no-op on SQLite (one writer at a time anyway), `pg_advisory_lock` on PostgreSQL.
#[async_trait]
pub(super) trait MigrationLock: Migrate + Send {
    async fn lock_migrations(&mut self) -> Result<(), DbError> {
        Ok(self.lock().await?)
    }
    async fn unlock_migrations(&mut self) -> Result<(), DbError> {
        Ok(self.unlock().await?)
    }
}

impl MigrationLock for SqliteConnection {}
impl MigrationLock for PgConnection {}

/// MySQL and MariaDB: our own `GET_LOCK`. sqlx's asks for `GET_LOCK(name, -1)`, which MariaDB
/// answers with NULL and a warning ("Incorrect timeout value") without locking anything, and
/// sqlx does not look at the answer: two migrations would run at once.
#[async_trait]
impl MigrationLock for MySqlConnection {
    async fn lock_migrations(&mut self) -> Result<(), DbError> {
        loop {
            let sql = format!("SELECT GET_LOCK({MYSQL_LOCK_NAME}, 10)");
            let got: Option<i64> = sqlx::query_scalar(&sql).fetch_one(&mut *self).await?;
            match got {
                Some(1) => return Ok(()),
                Some(_) => tracing::info!("waiting for another migration of this database to finish"),
                None => {
                    return Err(sqlx::Error::Protocol("GET_LOCK for the migration lock failed".into()).into())
                }
            }
        }
    }
    async fn unlock_migrations(&mut self) -> Result<(), DbError> {
        let sql = format!("SELECT RELEASE_LOCK({MYSQL_LOCK_NAME})");
        sqlx::query(&sql).execute(&mut *self).await?;
        Ok(())
    }
}

/// Per database, and within MySQL's 64-character limit for lock names.
const MYSQL_LOCK_NAME: &str = "CONCAT('nixcache-migrate:', SHA1(DATABASE()))";

async fn apply_locked<C: Migrate>(conn: &mut C, migrator: &Migrator) -> Result<Vec<Applied>, Failure> {
    conn.ensure_migrations_table().await?;
    let pending = pending(conn, migrator).await?;
    let mut applied = Vec::with_capacity(pending.len());
    for migration in pending {
        conn.apply(migration).await?;
        tracing::info!(version = migration.version, description = %migration.description, "migration applied");
        applied.push(Applied {
            version: migration.version,
            description: migration.description.to_string(),
        });
    }
    Ok(applied)
}

/// The migrations not yet applied, after checking that the applied ones are all ours, intact,
/// and finished.
async fn pending<'m, C: Migrate>(
    conn: &mut C,
    migrator: &'m Migrator,
) -> Result<Vec<&'m Migration>, Failure> {
    if let Some(version) = conn.dirty_version().await? {
        return Err(Failure::Refused(Refusal::Bad(
            version,
            "failed part-way earlier; repair the database by hand",
        )));
    }
    let applied = conn.list_applied_migrations().await?;
    plan(migrator, &applied)
}

/// Pure part of [`pending`]: compares the applied migrations with the known ones.
fn plan<'m>(migrator: &'m Migrator, applied: &[AppliedMigration]) -> Result<Vec<&'m Migration>, Failure> {
    let known: HashMap<i64, &Migration> = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| (m.version, m))
        .collect();
    let mut done = HashSet::new();
    for a in applied {
        match known.get(&a.version) {
            None => return Err(Failure::Refused(Refusal::Unknown(a.version))),
            Some(m) if m.checksum != a.checksum => {
                return Err(Failure::Refused(Refusal::Bad(
                    a.version,
                    "was changed after it was applied (checksum differs)",
                )))
            }
            Some(_) => {
                done.insert(a.version);
            }
        }
    }
    let mut todo: Vec<_> = known
        .into_values()
        .filter(|m| !done.contains(&m.version))
        .collect();
    todo.sort_by_key(|m| m.version);
    Ok(todo)
}

/// For `serve` on a shared database: fails unless every known migration is applied and no
/// unknown one is. Reads only; never creates the migrations table.
pub(super) async fn check<DB>(pool: &Pool<DB>, engine: Engine, url: &str) -> Result<(), DbError>
where
    DB: SqlDb,
    DB::Connection: Migrate,
{
    let planned = if migrations_table_exists(pool, engine).await? {
        let mut conn = pool.acquire().await?;
        pending(&mut *conn, migrator(engine)).await
    } else {
        plan(migrator(engine), &[])
    };
    let pending = planned.map_err(|e| e.at(url))?.len();
    if pending > 0 {
        return Err(DbError::NotMigrated {
            url: redact::url(url),
            pending,
        });
    }
    Ok(())
}

async fn migrations_table_exists<DB: SqlDb>(pool: &Pool<DB>, engine: Engine) -> Result<bool, DbError> {
    let sql = match engine {
        Engine::Sqlite => {
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Engine::Postgres => {
            "SELECT COUNT(*) AS n FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'"
        }
        Engine::MySql => {
            "SELECT COUNT(*) AS n FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = '_sqlx_migrations'"
        }
    };
    let row = DB::fetch(pool, sql, vec![]).await?;
    let n = match row {
        Some(row) => DB::int(&row, "n")?.unwrap_or(0),
        None => 0,
    };
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn applied(m: &Migration) -> AppliedMigration {
        AppliedMigration {
            version: m.version,
            checksum: m.checksum.clone(),
        }
    }

    #[test]
    fn every_engine_has_the_same_migrations() {
        let names = |m: &Migrator| {
            m.iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&SQLITE), names(&POSTGRES));
        assert_eq!(names(&SQLITE), names(&MYSQL));
        assert!(names(&SQLITE).len() >= 2);
    }

    #[test]
    fn plan_lists_pending_and_refuses_unknown_or_changed() {
        let all: Vec<_> = POSTGRES.iter().collect();
        let url = "postgres://u:secret@h/db";
        assert_eq!(plan(&POSTGRES, &[]).unwrap().len(), all.len());
        let first = [applied(all[0])];
        let todo = plan(&POSTGRES, &first).unwrap();
        assert_eq!(
            todo.iter().map(|m| m.version).collect::<Vec<_>>()[0],
            all[1].version
        );

        let newer = AppliedMigration {
            version: 9999,
            checksum: all[0].checksum.clone(),
        };
        let err = plan(&POSTGRES, &[newer]).unwrap_err().at(url);
        assert!(matches!(err, DbError::UnknownMigration { version: 9999, .. }));
        assert!(!err.to_string().contains("secret"), "{err}");

        let changed = AppliedMigration {
            version: all[0].version,
            checksum: vec![0; 48].into(),
        };
        let err = plan(&POSTGRES, &[changed]).unwrap_err().at(url);
        assert!(err.to_string().contains("checksum differs"), "{err}");
    }
}
