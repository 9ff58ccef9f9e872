//! SQLite: the embedded default. WAL mode so readers never wait for the writer.

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use nixcache_protocol::{Compression, NarFile, NarInfo, Sha256Hash, Signature, StorePath, StorePathHash};
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous},
    Row, SqlitePool,
};

use super::{
    lease_expiry, now, now_ms, DbError, Lease, LeaseClaim, LeaseKey, MetadataStore, NarInfoRecord, NarRecord,
    ProxySignature,
};

pub struct SqliteMetadata {
    pool: SqlitePool,
}

const NARINFO_COLUMNS: &str = "hash, store_path, nar_file, compression, file_hash, file_size, nar_hash, \
     nar_size, refs, deriver, ca, sigs, upstream_url, proxy_key, proxy_sig";

impl SqliteMetadata {
    /// Opens (creating if needed) and migrates the database at `url`.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

fn corrupt(key: &str, field: &'static str, reason: impl ToString) -> DbError {
    DbError::Corrupt {
        key: key.to_string(),
        field,
        reason: reason.to_string(),
    }
}

fn record_from_row(row: &SqliteRow) -> Result<NarInfoRecord, DbError> {
    let key: String = row.try_get("hash")?;
    let path =
        |field: &'static str, s: &str| StorePath::from_base_name(s).map_err(|e| corrupt(&key, field, e));
    let hash = |field: &'static str, s: &str| Sha256Hash::from_str(s).map_err(|e| corrupt(&key, field, e));
    let size = |v: i64| u64::try_from(v).map_err(|e| corrupt(&key, "size", e));

    let refs: String = row.try_get("refs")?;
    let sigs: String = row.try_get("sigs")?;
    let info = NarInfo {
        store_path: path("store_path", &row.try_get::<String, _>("store_path")?)?,
        url: row.try_get("upstream_url")?,
        compression: Compression::parse(&row.try_get::<String, _>("compression")?),
        file_hash: row
            .try_get::<Option<String>, _>("file_hash")?
            .map(|h| hash("file_hash", &h))
            .transpose()?,
        file_size: row
            .try_get::<Option<i64>, _>("file_size")?
            .map(size)
            .transpose()?,
        nar_hash: hash("nar_hash", &row.try_get::<String, _>("nar_hash")?)?,
        nar_size: size(row.try_get("nar_size")?)?,
        references: refs
            .split_whitespace()
            .map(|r| path("refs", r))
            .collect::<Result<_, _>>()?,
        deriver: row
            .try_get::<Option<String>, _>("deriver")?
            .map(|d| path("deriver", &d))
            .transpose()?,
        sigs: sigs
            .lines()
            .map(|s| Signature::parse(s).map_err(|e| corrupt(&key, "sigs", e)))
            .collect::<Result<_, _>>()?,
        ca: row.try_get("ca")?,
    };
    let nar_file =
        NarFile::parse(&row.try_get::<String, _>("nar_file")?).map_err(|e| corrupt(&key, "nar_file", e))?;
    let proxy_key: Option<String> = row.try_get("proxy_key")?;
    let proxy_sig: Option<String> = row.try_get("proxy_sig")?;
    let proxy_sig = match (proxy_key, proxy_sig) {
        (Some(public_key), Some(sig)) => Some(ProxySignature {
            public_key,
            sig: Signature::parse(&sig).map_err(|e| corrupt(&key, "proxy_sig", e))?,
        }),
        _ => None,
    };
    Ok(NarInfoRecord {
        info,
        nar_file,
        proxy_sig,
    })
}

fn join<T: ToString>(items: &[T], sep: &str) -> String {
    items.iter().map(T::to_string).collect::<Vec<_>>().join(sep)
}

#[async_trait]
impl MetadataStore for SqliteMetadata {
    async fn get_narinfo(&self, hash: &StorePathHash) -> Result<Option<NarInfoRecord>, DbError> {
        let sql = format!("SELECT {NARINFO_COLUMNS} FROM narinfos WHERE hash = ?");
        let row = sqlx::query(&sql)
            .bind(hash.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record_from_row).transpose()
    }

    async fn put_narinfo(&self, rec: &NarInfoRecord) -> Result<(), DbError> {
        let info = &rec.info;
        let ts = now();
        sqlx::query(
            "INSERT OR REPLACE INTO narinfos (hash, store_path, nar_file, compression, file_hash, file_size, \
             nar_hash, nar_size, refs, deriver, ca, sigs, upstream_url, proxy_key, proxy_sig, created_at, \
             last_access) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(info.store_path.hash().to_string())
        .bind(info.store_path.to_string())
        .bind(rec.nar_file.file_name())
        .bind(info.compression.as_str())
        .bind(info.file_hash.map(|h| h.to_string()))
        .bind(info.file_size.map(|s| s as i64))
        .bind(info.nar_hash.to_string())
        .bind(info.nar_size as i64)
        .bind(join(&info.references, " "))
        .bind(info.deriver.as_ref().map(|d| d.to_string()))
        .bind(info.ca.as_deref())
        .bind(join(&info.sigs, "\n"))
        .bind(&info.url)
        .bind(rec.proxy_sig.as_ref().map(|p| p.public_key.as_str()))
        .bind(rec.proxy_sig.as_ref().map(|p| p.sig.to_string()))
        .bind(ts)
        .bind(ts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn narinfo_for_nar(&self, file: &NarFile) -> Result<Option<NarInfoRecord>, DbError> {
        let sql = format!("SELECT {NARINFO_COLUMNS} FROM narinfos WHERE nar_file = ? LIMIT 1");
        let row = sqlx::query(&sql)
            .bind(file.file_name())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record_from_row).transpose()
    }

    async fn set_proxy_signature(&self, hash: &StorePathHash, sig: &ProxySignature) -> Result<(), DbError> {
        sqlx::query("UPDATE narinfos SET proxy_key = ?, proxy_sig = ? WHERE hash = ?")
            .bind(&sig.public_key)
            .bind(sig.sig.to_string())
            .bind(hash.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_nar(&self, file: &NarFile) -> Result<Option<NarRecord>, DbError> {
        let row = sqlx::query("SELECT file_size, nar_hash FROM nars WHERE nar_file = ?")
            .bind(file.file_name())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let key = file.file_name();
        let size: i64 = row.try_get("file_size")?;
        let file_size = u64::try_from(size).map_err(|e| corrupt(&key, "file_size", e))?;
        let nar_hash = row.try_get::<String, _>("nar_hash")?;
        let nar_hash = Sha256Hash::from_str(&nar_hash).map_err(|e| corrupt(&key, "nar_hash", e))?;
        Ok(Some(NarRecord {
            nar_file: file.clone(),
            file_size,
            nar_hash,
        }))
    }

    async fn put_nar(&self, rec: &NarRecord) -> Result<(), DbError> {
        let ts = now();
        sqlx::query(
            "INSERT OR REPLACE INTO nars (nar_file, file_size, nar_hash, created_at, last_access) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(rec.nar_file.file_name())
        .bind(i64::try_from(rec.file_size).map_err(|e| corrupt(&rec.nar_file.file_name(), "file_size", e))?)
        .bind(rec.nar_hash.to_string())
        .bind(ts)
        .bind(ts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_narinfo(&self, hash: &StorePathHash) -> Result<(), DbError> {
        sqlx::query("DELETE FROM narinfos WHERE hash = ?")
            .bind(hash.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_nar(&self, file: &NarFile) -> Result<(), DbError> {
        sqlx::query("DELETE FROM nars WHERE nar_file = ?")
            .bind(file.file_name())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn claim_lease(
        &self,
        key: &LeaseKey,
        holder: &str,
        address: &str,
        ttl: Duration,
    ) -> Result<LeaseClaim, DbError> {
        // One statement: insert, or take over a row that expired or is already ours.
        let taken = sqlx::query(
            "INSERT INTO fetch_leases (lease_key, holder, address, expires_at_ms) VALUES (?, ?, ?, ?) \
             ON CONFLICT (lease_key) DO UPDATE SET holder = excluded.holder, address = excluded.address, \
             expires_at_ms = excluded.expires_at_ms \
             WHERE fetch_leases.expires_at_ms < ? OR fetch_leases.holder = excluded.holder",
        )
        .bind(key.as_str())
        .bind(holder)
        .bind(address)
        .bind(lease_expiry(ttl))
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if taken == 1 {
            return Ok(LeaseClaim::Acquired);
        }
        match self.get_lease(key).await? {
            Some(lease) => Ok(LeaseClaim::Held(lease)),
            // Released between the two statements: free again.
            None => Box::pin(self.claim_lease(key, holder, address, ttl)).await,
        }
    }

    async fn renew_lease(&self, key: &LeaseKey, holder: &str, ttl: Duration) -> Result<bool, DbError> {
        let renewed =
            sqlx::query("UPDATE fetch_leases SET expires_at_ms = ? WHERE lease_key = ? AND holder = ?")
                .bind(lease_expiry(ttl))
                .bind(key.as_str())
                .bind(holder)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(renewed == 1)
    }

    async fn release_lease(&self, key: &LeaseKey, holder: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM fetch_leases WHERE lease_key = ? AND holder = ?")
            .bind(key.as_str())
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_lease(&self, key: &LeaseKey) -> Result<Option<Lease>, DbError> {
        let row = sqlx::query("SELECT holder, address, expires_at_ms FROM fetch_leases WHERE lease_key = ?")
            .bind(key.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Lease {
            key: key.clone(),
            holder: row.try_get("holder")?,
            address: row.try_get("address")?,
            expires_at_ms: row.try_get("expires_at_ms")?,
        }))
    }
}
