//! The little each engine's sqlx driver has to offer [`super::store::SqlStore`]: binding our two
//! column types, running a statement, reading a column.

use async_trait::async_trait;
use sqlx::{
    database::Database, mysql::MySqlQueryResult, postgres::PgQueryResult, query::Query,
    sqlite::SqliteQueryResult, ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type,
};

/// A value bound to a placeholder: every column is text or a 64-bit integer.
pub enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_string()))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}

/// Rows changed by a statement (sqlx has no trait for it).
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}
impl RowsAffected for SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        SqliteQueryResult::rows_affected(self)
    }
}
impl RowsAffected for PgQueryResult {
    fn rows_affected(&self) -> u64 {
        PgQueryResult::rows_affected(self)
    }
}
impl RowsAffected for MySqlQueryResult {
    fn rows_affected(&self) -> u64 {
        MySqlQueryResult::rows_affected(self)
    }
}

/// What the store needs from an engine: run a statement, fetch a row, read a column. Implemented
/// once, for every sqlx database that can bind and decode our two column types.
#[async_trait]
pub trait SqlDb: Database {
    fn query(sql: &str, args: Vec<Arg>) -> Query<'_, Self, Self::Arguments<'_>>;
    async fn exec(pool: &Pool<Self>, sql: &str, args: Vec<Arg>) -> Result<u64, sqlx::Error>;
    async fn fetch(pool: &Pool<Self>, sql: &str, args: Vec<Arg>) -> Result<Option<Self::Row>, sqlx::Error>;
    async fn fetch_all(pool: &Pool<Self>, sql: &str, args: Vec<Arg>) -> Result<Vec<Self::Row>, sqlx::Error>;
    /// Text columns are read without sqlx's type check: MySQL marks `*_bin` collations BINARY,
    /// which sqlx 0.8 refuses to read as `String` (the bytes are valid UTF-8 all the same).
    fn text(row: &Self::Row, column: &str) -> Result<Option<String>, sqlx::Error>;
    fn int(row: &Self::Row, column: &str) -> Result<Option<i64>, sqlx::Error>;
}

#[async_trait]
impl<DB> SqlDb for DB
where
    DB: Database,
    DB::QueryResult: RowsAffected,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    fn query(sql: &str, args: Vec<Arg>) -> Query<'_, Self, Self::Arguments<'_>> {
        args.into_iter()
            .fold(sqlx::query::<DB>(sql), |query, arg| match arg {
                Arg::Text(v) => query.bind(v),
                Arg::Int(v) => query.bind(v),
            })
    }

    async fn exec(pool: &Pool<Self>, sql: &str, args: Vec<Arg>) -> Result<u64, sqlx::Error> {
        Ok(Self::query(sql, args).execute(pool).await?.rows_affected())
    }

    async fn fetch(pool: &Pool<Self>, sql: &str, args: Vec<Arg>) -> Result<Option<Self::Row>, sqlx::Error> {
        Self::query(sql, args).fetch_optional(pool).await
    }

    async fn fetch_all(pool: &Pool<Self>, sql: &str, args: Vec<Arg>) -> Result<Vec<Self::Row>, sqlx::Error> {
        Self::query(sql, args).fetch_all(pool).await
    }

    fn text(row: &Self::Row, column: &str) -> Result<Option<String>, sqlx::Error> {
        row.try_get_unchecked(column)
    }

    fn int(row: &Self::Row, column: &str) -> Result<Option<i64>, sqlx::Error> {
        row.try_get(column)
    }
}
