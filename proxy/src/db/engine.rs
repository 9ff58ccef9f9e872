//! The database engines, told apart by the URL's scheme, and how to reach each: the leaf that
//! `migrate` (which connects to apply migrations) and `open` (which builds the store) share.

use std::time::Duration;

use sqlx::{
    mysql::MySqlConnectOptions,
    postgres::PgConnectOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
    ConnectOptions,
};

use super::DbError;
use crate::redact;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
    MySql,
}

impl Engine {
    /// `sqlite:`, `postgres://` / `postgresql://`, `mysql://` / `mariadb://`.
    pub fn from_url(url: &str) -> Result<Self, DbError> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("sqlite") => Ok(Self::Sqlite),
            Some("postgres" | "postgresql") => Ok(Self::Postgres),
            Some("mysql" | "mariadb") => Ok(Self::MySql),
            _ => Err(DbError::UnsupportedUrl(redact::url(url))),
        }
    }
}

/// Parses `url` into connect options of any engine, naming the (redacted) URL when it fails.
fn parse_options<O: ConnectOptions>(url: &str) -> Result<O, DbError> {
    O::from_str(url).map_err(|source| DbError::Connect {
        url: redact::url(url),
        source,
    })
}

/// SQLite, the embedded default: WAL mode so readers never wait for the writer.
pub(super) fn sqlite_options(url: &str) -> Result<SqliteConnectOptions, DbError> {
    let options: SqliteConnectOptions = parse_options(url)?;
    Ok(options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10)))
}

pub(super) fn postgres_options(url: &str) -> Result<PgConnectOptions, DbError> {
    parse_options(url)
}

/// sqlx reads any scheme here, `mariadb://` too; utf8mb4 is its default character set.
pub(super) fn mysql_options(url: &str) -> Result<MySqlConnectOptions, DbError> {
    parse_options(url)
}
