//! PostgreSQL: shared by several replicas, migrated beforehand by `nixcache migrate`.

use sqlx::{postgres::PgConnectOptions, Postgres};

use super::{
    store::{parse_options, SqlStore},
    DbError, Engine,
};

pub(super) fn connect_options(url: &str) -> Result<PgConnectOptions, DbError> {
    parse_options(url)
}

impl SqlStore<Postgres> {
    /// Connects to the database at `url`; fails unless it is migrated to this binary's schema.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        Self::open_shared(connect_options(url)?, Engine::Postgres, url).await
    }
}
