//! Opening the store on each engine. SQLite is the embedded default and is migrated on open;
//! PostgreSQL and MySQL/MariaDB (`mysql://` or `mariadb://`) are shared by several replicas and
//! migrated beforehand by `nixcache migrate`, so opening only checks them.

use sqlx::{migrate::Migrate, Connection, MySql, Postgres, Sqlite};

use super::{engine, migrate, sql::SqlDb, store::SqlStore, DbError, Engine};

/// Connections of the embedded SQLite database.
const SQLITE_MAX_CONNECTIONS: u32 = 8;
/// Connections per replica to a shared PostgreSQL or MySQL server.
const SHARED_MAX_CONNECTIONS: u32 = 16;

impl SqlStore<Sqlite> {
    /// Opens (creating if needed) and migrates the database at `url`.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        let options = engine::sqlite_options(url)?;
        let pool = Self::pool(options, SQLITE_MAX_CONNECTIONS, url).await?;
        let mut conn = pool.acquire().await?;
        migrate::apply(&mut *conn, &migrate::SQLITE)
            .await
            .map_err(|e| e.at(url))?;
        drop(conn);
        Ok(Self::new(pool, Engine::Sqlite))
    }
}

impl SqlStore<Postgres> {
    /// Connects to the database at `url`; fails unless it is migrated to this binary's schema.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        open_shared(engine::postgres_options(url)?, Engine::Postgres, url).await
    }
}

impl SqlStore<MySql> {
    /// Connects to the database at `url`; fails unless it is migrated to this binary's schema.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        open_shared(engine::mysql_options(url)?, Engine::MySql, url).await
    }
}

/// Opens a database that several replicas share: checked, never migrated, here.
async fn open_shared<DB: SqlDb>(
    options: <DB::Connection as Connection>::Options,
    engine: Engine,
    url: &str,
) -> Result<SqlStore<DB>, DbError>
where
    DB::Connection: Migrate,
{
    let pool = SqlStore::<DB>::pool(options, SHARED_MAX_CONNECTIONS, url).await?;
    migrate::check(&pool, engine, url).await?;
    Ok(SqlStore::new(pool, engine))
}
