//! SQLite: the embedded default. WAL mode so readers never wait for the writer; migrated on open.

use std::time::Duration;

use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
    Sqlite,
};

use super::{
    migrate,
    store::{parse_options, SqlStore},
    DbError, Engine,
};

const MAX_CONNECTIONS: u32 = 8;

pub(super) fn connect_options(url: &str) -> Result<SqliteConnectOptions, DbError> {
    let options: SqliteConnectOptions = parse_options(url)?;
    Ok(options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10)))
}

impl SqlStore<Sqlite> {
    /// Opens (creating if needed) and migrates the database at `url`.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        let pool = Self::pool(connect_options(url)?, MAX_CONNECTIONS, url).await?;
        let mut conn = pool.acquire().await?;
        migrate::apply(&mut *conn, &migrate::SQLITE, url).await?;
        drop(conn);
        Ok(Self::new(pool, Engine::Sqlite))
    }
}
