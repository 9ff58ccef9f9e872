//! The conformance suite (one test per property) and the migration and lease-race scenarios on every engine, each test on a fresh
//! database (`testdb`): SQLite always, PostgreSQL and MariaDB/MySQL when their test servers
//! answer (required in CI).

use std::{sync::Arc, time::Duration};

use super::{
    leases, lru, narinfos_and_nars, record,
    side_files::{self, refuses_corrupt_side_files},
};
use crate::db::{
    connect,
    migrate::{self, migrator},
    testdb::TestDb,
    DbError, Engine, LeaseClaim, LeaseKey, MetadataStore,
};

/// One `#[tokio::test]` per engine for each scenario `fn(Engine)`.
macro_rules! on_engines {
    ($engine_mod:ident: $engine:expr => $($scenario:ident),* $(,)?) => {
        mod $engine_mod {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::$scenario($engine).await
                }
            )*
        }
    };
}

on_engines!(sqlite: crate::db::Engine::Sqlite =>
    stores_narinfos_and_nars, holds_leases, evicts_least_recent_first, deletes_expired_leases,
    keeps_uploads, keeps_side_files, scans_for_fsck, keeps_pins, orders_nars_by_verification, records_upkeep, refuses_corrupt_side_files, migrate_reports_then_up_to_date,
    refuses_newer_schema, lease_race, expired_lease_race);
on_engines!(postgres: crate::db::Engine::Postgres =>
    stores_narinfos_and_nars, holds_leases, evicts_least_recent_first, deletes_expired_leases,
    keeps_uploads, keeps_side_files, scans_for_fsck, keeps_pins, orders_nars_by_verification, records_upkeep, refuses_corrupt_side_files, migrate_reports_then_up_to_date,
    refuses_newer_schema, lease_race, expired_lease_race, refuses_unmigrated, concurrent_migrate);
on_engines!(mysql: crate::db::Engine::MySql =>
    stores_narinfos_and_nars, holds_leases, evicts_least_recent_first, deletes_expired_leases,
    keeps_uploads, keeps_side_files, scans_for_fsck, keeps_pins, orders_nars_by_verification, records_upkeep, refuses_corrupt_side_files, migrate_reports_then_up_to_date,
    refuses_newer_schema, lease_race, expired_lease_race, refuses_unmigrated, concurrent_migrate,
    mariadb_scheme);

/// A conformance property `fn(&dyn MetadataStore)` as a scenario on a fresh, migrated database.
macro_rules! property {
    ($($scenario:ident => $property:path),* $(,)?) => {
        $(
            async fn $scenario(engine: Engine) {
                let Some(db) = TestDb::migrated(engine).await else {
                    return;
                };
                $property(&*connect(db.url()).await.unwrap()).await;
            }
        )*
    };
}

property!(
    stores_narinfos_and_nars => narinfos_and_nars,
    holds_leases => leases,
    evicts_least_recent_first => lru::lru,
    deletes_expired_leases => lru::expired_leases,
    keeps_uploads => lru::uploads,
    keeps_side_files => side_files::side_files,
    scans_for_fsck => super::audit::audit_scans,
    keeps_pins => super::pins::pins,
    orders_nars_by_verification => super::verified::verification_order,
    records_upkeep => super::upkeep::upkeep_records,
);

fn known(engine: Engine) -> usize {
    migrator(engine).iter().count()
}

async fn migrate_reports_then_up_to_date(engine: Engine) {
    let Some(db) = TestDb::fresh(engine).await else {
        return;
    };
    let applied = migrate::run(db.url()).await.unwrap();
    let versions: Vec<_> = applied.iter().map(|a| a.version).collect();
    assert_eq!(
        versions,
        migrator(engine).iter().map(|m| m.version).collect::<Vec<_>>()
    );
    let report = migrate::report(db.url(), &applied);
    assert!(report.contains("applied 0001 init"), "{report}");
    assert!(report.contains("applied 0002 fetch leases"), "{report}");
    assert!(report.contains("applied 0006 side files"), "{report}");
    assert!(report.contains("applied 0007 pins"), "{report}");
    assert!(report.contains("applied 0008 scrub records"), "{report}");
    assert!(report.contains("applied 0009 upkeep runs"), "{report}");

    let again = migrate::run(db.url()).await.unwrap();
    assert_eq!(again, vec![]);
    let report = migrate::report(db.url(), &again);
    assert!(report.contains("is up to date"), "{report}");
    connect(db.url()).await.unwrap().ping().await.unwrap();
}

/// `serve` (through `db::connect`) refuses a shared database that `nixcache migrate` has not
/// prepared, and says how to fix it.
async fn refuses_unmigrated(engine: Engine) {
    let Some(db) = TestDb::fresh(engine).await else {
        return;
    };
    let err = connect(db.url()).await.err().unwrap();
    assert!(
        matches!(err, DbError::NotMigrated { pending, .. } if pending == known(engine)),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("is not migrated"), "{message}");
    assert!(
        message.contains("run `nixcache migrate --database-url "),
        "{message}"
    );
    // Checking created nothing: migrating afterwards applies everything.
    assert_eq!(migrate::run(db.url()).await.unwrap().len(), known(engine));
    connect(db.url()).await.unwrap();
}

/// A database migrated by a newer nixcache is refused, on SQLite too.
async fn refuses_newer_schema(engine: Engine) {
    let Some(db) = TestDb::migrated(engine).await else {
        return;
    };
    let checksum = if engine == Engine::Postgres {
        "'\\x00'"
    } else {
        "X'00'"
    };
    db.execute(&format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, {checksum}, 0)"
    ))
    .await
    .unwrap();
    let err = connect(db.url()).await.err().unwrap();
    assert!(
        matches!(err, DbError::UnknownMigration { version: 9999, .. }),
        "{err:?}"
    );
    assert!(migrate::run(db.url()).await.is_err());
}

/// Two `nixcache migrate` at once on a fresh database: one applies, the other waits and finds
/// nothing left to do.
async fn concurrent_migrate(engine: Engine) {
    let Some(db) = TestDb::fresh(engine).await else {
        return;
    };
    let (a, b) = tokio::join!(migrate::run(db.url()), migrate::run(db.url()));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), known(engine), "{a:?} {b:?}");
    assert!(a.is_empty() || b.is_empty(), "{a:?} {b:?}");
    connect(db.url()).await.unwrap();
}

/// Eight replicas claim one free lease at once: exactly one gets it, the others see it.
async fn lease_race(engine: Engine) {
    let Some(db) = TestDb::migrated(engine).await else {
        return;
    };
    let store = connect(db.url()).await.unwrap();
    let key = LeaseKey::nar(&record(9, vec![]).nar_file);
    let winner = race(&store, &key, Duration::from_secs(60)).await;
    let lease = store.get_lease(&key).await.unwrap().unwrap();
    assert_eq!(lease.holder, winner);
    // Renewing twice within the same millisecond still reports the lease as held (MySQL counts
    // matched rows, not changed ones).
    for _ in 0..20 {
        assert!(store
            .renew_lease(&key, &winner, Duration::from_secs(60))
            .await
            .unwrap());
    }
}

/// Eight replicas take over one expired lease at once: exactly one gets it.
async fn expired_lease_race(engine: Engine) {
    let Some(db) = TestDb::migrated(engine).await else {
        return;
    };
    let store = connect(db.url()).await.unwrap();
    let key = LeaseKey::narinfo(&nixcache_protocol::StorePathHash([9; 20]));
    let claim = store.claim_lease(&key, "dead", "http://dead:1", Duration::from_millis(1));
    assert_eq!(claim.await.unwrap(), LeaseClaim::Acquired);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let winner = race(&store, &key, Duration::from_secs(60)).await;
    assert_ne!(winner, "dead");
    assert!(!store
        .renew_lease(&key, "dead", Duration::from_secs(60))
        .await
        .unwrap());
}

/// Runs 8 concurrent claims from holders `r0`..`r7`; asserts one winner and returns it.
async fn race(store: &Arc<dyn MetadataStore>, key: &LeaseKey, ttl: Duration) -> String {
    let claims = (0..8).map(|i| {
        let (store, key) = (store.clone(), key.clone());
        tokio::spawn(async move {
            let (holder, address) = (format!("r{i}"), format!("http://r{i}:1"));
            let claim = store.claim_lease(&key, &holder, &address, ttl).await.unwrap();
            (holder, claim)
        })
    });
    let results = futures::future::join_all(claims).await;
    let results: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    let winners: Vec<_> = results
        .iter()
        .filter(|(_, c)| *c == LeaseClaim::Acquired)
        .map(|(h, _)| h.clone())
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (_, claim) in &results {
        if let LeaseClaim::Held(lease) = claim {
            assert_eq!(lease.holder, winners[0], "{results:?}");
        }
    }
    winners[0].clone()
}

/// `mariadb://` is accepted as `mysql://`.
async fn mariadb_scheme(engine: Engine) {
    let Some(db) = TestDb::migrated(engine).await else {
        return;
    };
    let url = db.url().replacen("mysql://", "mariadb://", 1);
    assert_eq!(Engine::from_url(&url).unwrap(), Engine::MySql);
    connect(&url).await.unwrap().ping().await.unwrap();
}
