//! Fresh databases for tests, here and in other crates (feature `test-util`): each [`TestDb`] is
//! a new, uniquely named database on the test server (or a new SQLite file), dropped again when
//! the `TestDb` is, also when the test panics.
//!
//! Servers: `NIXCACHE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`) and
//! `NIXCACHE_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`); the user must be allowed
//! to create databases. When a server is unreachable the test prints `SKIP: …` and passes, except
//! with `CI` or `NIXCACHE_TEST_REQUIRE_DB=1` set, where it fails.

use std::{
    hash::{BuildHasher, Hasher},
    str::FromStr,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use sqlx::{
    mysql::MySqlConnectOptions, postgres::PgConnectOptions, sqlite::SqliteConnectOptions, ConnectOptions,
    Connection, Executor,
};

use super::{migrate, DbError, Engine};
use crate::redact::url as redact_url;

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A fresh database; dropped (or its file removed) on drop.
pub struct TestDb {
    engine: Engine,
    url: String,
    /// The server URL the database was created through (unused for SQLite).
    admin_url: String,
    name: String,
}

impl TestDb {
    /// A new, empty (unmigrated) database for `engine`, or `None` after printing `SKIP` when the
    /// test server is unreachable and not required. Panics when it is required.
    pub async fn fresh(engine: Engine) -> Option<Self> {
        let name = unique_name();
        let admin_url = match engine {
            Engine::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.sqlite"));
                let url = format!("sqlite://{}", path.display());
                return Some(Self::new(engine, url, String::new(), name));
            }
            Engine::Postgres => env_or("NIXCACHE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
            Engine::MySql => env_or("NIXCACHE_TEST_MYSQL_URL", DEFAULT_MYSQL_URL),
        };
        if let Err(err) = admin(engine, &admin_url, &create_sql(engine, &name)).await {
            let what = format!(
                "{engine:?} test server at {} unavailable: {err}",
                redact_url(&admin_url)
            );
            if required() {
                panic!("{what} (required because CI or NIXCACHE_TEST_REQUIRE_DB=1 is set)");
            }
            eprintln!("SKIP: {what}");
            return None;
        }
        let url = with_database(&admin_url, &name);
        Some(Self::new(engine, url, admin_url, name))
    }

    /// A new database with every migration applied.
    pub async fn migrated(engine: Engine) -> Option<Self> {
        let db = Self::fresh(engine).await?;
        if let Err(err) = migrate::run(&db.url).await {
            panic!("migrating the test database {}: {err}", redact_url(&db.url));
        }
        Some(db)
    }

    fn new(engine: Engine, url: String, admin_url: String, name: String) -> Self {
        Self {
            engine,
            url,
            admin_url,
            name,
        }
    }

    /// The URL to give `db::connect` or `nixcache --database-url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Runs one SQL statement in the database, on a connection of its own.
    pub async fn execute(&self, sql: &str) -> Result<(), DbError> {
        admin(self.engine, &self.url, sql).await
    }
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb")
            .field("url", &redact_url(&self.url))
            .finish()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.engine == Engine::Sqlite {
            let path = self.url.trim_start_matches("sqlite://");
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
            return;
        }
        // Drop may run inside a runtime (or without one): drop the database from a thread of
        // its own, with a runtime of its own.
        let (engine, admin_url, sql) = (
            self.engine,
            self.admin_url.clone(),
            drop_sql(self.engine, &self.name),
        );
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(admin(engine, &admin_url, &sql))
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// Database tests must run (not skip) in CI.
fn required() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    ci || std::env::var("NIXCACHE_TEST_REQUIRE_DB").is_ok_and(|v| v == "1")
}

/// `nixcache_test_<pid>_<counter>_<random>`: unique across processes and runs.
fn unique_name() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("nixcache_test_{}_{n}_{:08x}", std::process::id(), random as u32)
}

fn create_sql(engine: Engine, name: &str) -> String {
    match engine {
        Engine::MySql => format!("CREATE DATABASE `{name}`"),
        _ => format!("CREATE DATABASE \"{name}\""),
    }
}

fn drop_sql(engine: Engine, name: &str) -> String {
    match engine {
        Engine::MySql => format!("DROP DATABASE IF EXISTS `{name}`"),
        // FORCE (PostgreSQL 13+): the test's pool may still have connections open.
        _ => format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    }
}

/// `url` with its database (the path) replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.set_path(&format!("/{name}"));
            parsed.to_string()
        }
        Err(_) => url.to_string(),
    }
}

/// Runs one statement on a short-lived connection to the server at `url`.
async fn admin(engine: Engine, url: &str, sql: &str) -> Result<(), DbError> {
    let connect = async {
        match engine {
            Engine::Sqlite => run_on(SqliteConnectOptions::from_str(url)?, sql).await,
            Engine::Postgres => run_on(PgConnectOptions::from_str(url)?, sql).await,
            Engine::MySql => run_on(MySqlConnectOptions::from_str(url)?, sql).await,
        }
    };
    match tokio::time::timeout(ADMIN_TIMEOUT, connect).await {
        Ok(result) => result.map_err(DbError::from),
        Err(_) => Err(DbError::Sqlx(sqlx::Error::PoolTimedOut)),
    }
}

async fn run_on<O>(options: O, sql: &str) -> Result<(), sqlx::Error>
where
    O: ConnectOptions,
    O::Connection: Sized,
    for<'c> &'c mut O::Connection: Executor<'c>,
{
    let mut conn = options.connect().await?;
    conn.execute(sql).await?;
    conn.close().await
}
