//! MySQL and MariaDB (`mysql://` or `mariadb://`): shared by several replicas, migrated
//! beforehand by `nixcache migrate`.

use sqlx::{mysql::MySqlConnectOptions, MySql};

use super::{
    store::{parse_options, SqlStore},
    DbError, Engine,
};

/// sqlx reads any scheme here, `mariadb://` too; utf8mb4 is its default character set.
pub(super) fn connect_options(url: &str) -> Result<MySqlConnectOptions, DbError> {
    parse_options(url)
}

impl SqlStore<MySql> {
    /// Connects to the database at `url`; fails unless it is migrated to this binary's schema.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        Self::open_shared(connect_options(url)?, Engine::MySql, url).await
    }
}
