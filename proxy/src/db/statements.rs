//! The SQL of every operation, written once with `?` placeholders. Engines differ only in the
//! upserts (`ON CONFLICT … DO UPDATE` on SQLite and PostgreSQL, `ON DUPLICATE KEY UPDATE` on
//! MySQL), in the cast that reads a SMALLINT as a 64-bit integer, and in PostgreSQL's numbered
//! placeholders (`$1`, `$2`, …).

use super::Engine;

/// The narinfo columns, in the order `put_narinfo` binds them and `row::narinfo` reads them.
pub(super) const NARINFO_COLUMNS: [&str; 18] = [
    "hash",
    "store_path",
    "nar_file",
    "compression",
    "file_hash",
    "file_size",
    "nar_hash",
    "nar_size",
    "refs",
    "deriver",
    "ca",
    "sigs",
    "upstream_url",
    "proxy_key",
    "proxy_sig",
    "created_at",
    "last_access",
    "evicted_at",
];

const NAR_COLUMNS: [&str; 5] = ["nar_file", "file_size", "nar_hash", "created_at", "last_access"];
const UPLOAD_COLUMNS: [&str; 5] = ["nar_file", "file_size", "nar_hash", "nar_size", "created_at"];
const LEASE_COLUMNS: [&str; 4] = ["lease_key", "holder", "address", "expires_at_ms"];
/// In the order `put_side_file` binds them (`row::side_file_args`).
const SIDE_FILE_COLUMNS: [&str; 6] = [
    "path",
    "encoding",
    "size",
    "uploaded",
    "created_at",
    "last_access",
];

pub(super) struct Statements {
    pub get_narinfo: String,
    pub narinfo_for_nar: String,
    pub put_narinfo: String,
    pub set_proxy_signature: String,
    pub delete_narinfo: String,
    pub get_nar: String,
    pub put_nar: String,
    pub delete_nar: String,
    /// Binds key, holder, address, expiry, now. Takes the row when it is new, expired, or the
    /// holder's already; otherwise leaves it as it is. The caller reads the row back.
    pub claim_lease: String,
    pub renew_lease: String,
    pub release_lease: String,
    pub get_lease: String,
    pub delete_expired_leases: String,
    pub put_upload: String,
    pub get_upload: String,
    pub delete_upload: String,
    pub delete_stale_upload: String,
    pub stale_uploads: String,
    pub evict_narinfo: String,
    pub purge_evicted_narinfos: String,
    /// Binds the file twice: deletes the NAR row only while no live narinfo names it.
    pub delete_unnamed_nar: String,
    pub get_side_file: String,
    pub put_side_file: String,
    pub delete_side_file: String,
}

impl Statements {
    pub fn new(engine: Engine) -> Self {
        let select = NARINFO_COLUMNS[..15].join(", ");
        let uploaded = as_int64(engine, "uploaded");
        let sql = |text: &str| placeholders(engine, text);
        Self {
            get_narinfo: sql(&format!(
                "SELECT {select} FROM narinfos WHERE hash = ? AND evicted_at IS NULL"
            )),
            // One an upstream has first (the NAR can be fetched again: an uploaded one's URL is
            // relative), then a live one; an evicted one still says where the NAR comes from.
            narinfo_for_nar: sql(&format!(
                "SELECT {select} FROM narinfos WHERE nar_file = ? \
                 ORDER BY CASE WHEN upstream_url LIKE '%://%' THEN 0 ELSE 1 END, \
                 CASE WHEN evicted_at IS NULL THEN 0 ELSE 1 END LIMIT 1"
            )),
            put_narinfo: sql(&upsert(engine, "narinfos", &NARINFO_COLUMNS)),
            set_proxy_signature: sql("UPDATE narinfos SET proxy_key = ?, proxy_sig = ? WHERE hash = ?"),
            delete_narinfo: sql("DELETE FROM narinfos WHERE hash = ?"),
            get_nar: sql("SELECT file_size, nar_hash FROM nars WHERE nar_file = ?"),
            put_nar: sql(&upsert(engine, "nars", &NAR_COLUMNS)),
            delete_nar: sql("DELETE FROM nars WHERE nar_file = ?"),
            claim_lease: sql(&claim_lease(engine)),
            renew_lease: sql("UPDATE fetch_leases SET expires_at_ms = ? WHERE lease_key = ? AND holder = ?"),
            release_lease: sql("DELETE FROM fetch_leases WHERE lease_key = ? AND holder = ?"),
            get_lease: sql("SELECT holder, address, expires_at_ms FROM fetch_leases WHERE lease_key = ?"),
            delete_expired_leases: sql("DELETE FROM fetch_leases WHERE expires_at_ms < ?"),
            put_upload: sql(&upsert(engine, "uploads", &UPLOAD_COLUMNS)),
            get_upload: sql("SELECT nar_file, file_size, nar_hash, nar_size FROM uploads WHERE nar_file = ?"),
            delete_upload: sql("DELETE FROM uploads WHERE nar_file = ?"),
            delete_stale_upload: sql("DELETE FROM uploads WHERE nar_file = ? AND created_at < ?"),
            evict_narinfo: sql("UPDATE narinfos SET evicted_at = ? WHERE hash = ? AND evicted_at IS NULL"),
            purge_evicted_narinfos: sql("DELETE FROM narinfos WHERE evicted_at < ?"),
            delete_unnamed_nar: sql("DELETE FROM nars WHERE nar_file = ? AND NOT EXISTS \
                 (SELECT 1 FROM narinfos WHERE narinfos.nar_file = ? AND narinfos.evicted_at IS NULL)"),
            stale_uploads: sql(
                "SELECT nar_file, file_size, nar_hash, nar_size FROM uploads WHERE created_at < ? \
                 ORDER BY created_at LIMIT ?",
            ),
            get_side_file: sql(&format!(
                "SELECT encoding, size, {uploaded} AS uploaded FROM side_files WHERE path = ?"
            )),
            put_side_file: sql(&upsert(engine, "side_files", &SIDE_FILE_COLUMNS)),
            delete_side_file: sql("DELETE FROM side_files WHERE path = ?"),
        }
    }
}

/// Inserts a row, or replaces every column but the key (the first column) of the existing one.
pub(super) fn upsert(engine: Engine, table: &str, columns: &[&str]) -> String {
    let values = vec!["?"; columns.len()].join(", ");
    let (key, rest) = columns.split_first().map_or(("", &[][..]), |(k, r)| (*k, r));
    let insert = format!("INSERT INTO {table} ({}) VALUES ({values})", columns.join(", "));
    match engine {
        Engine::MySql => {
            let set: Vec<_> = rest.iter().map(|c| format!("{c} = VALUES({c})")).collect();
            format!("{insert} ON DUPLICATE KEY UPDATE {}", set.join(", "))
        }
        Engine::Sqlite | Engine::Postgres => {
            let set: Vec<_> = rest.iter().map(|c| format!("{c} = excluded.{c}")).collect();
            format!("{insert} ON CONFLICT ({key}) DO UPDATE SET {}", set.join(", "))
        }
    }
}

/// `column`, a narrower integer (the `uploaded` flag's SMALLINT), read as the 64-bit integer that
/// every integer column is read as: PostgreSQL decodes each width as its own type.
pub(super) fn as_int64(engine: Engine, column: &str) -> String {
    match engine {
        Engine::Sqlite => column.to_string(),
        Engine::Postgres => format!("CAST({column} AS BIGINT)"),
        Engine::MySql => format!("CAST({column} AS SIGNED)"),
    }
}

fn claim_lease(engine: Engine) -> String {
    let insert = format!(
        "INSERT INTO fetch_leases ({}) VALUES (?, ?, ?, ?)",
        LEASE_COLUMNS.join(", ")
    );
    match engine {
        // MySQL has no conditional upsert, and evaluates the assignments left to right, each
        // seeing the columns already assigned. So `holder` goes first, decided on the old row;
        // after it, `holder = VALUES(holder)` holds exactly when the lease was taken.
        Engine::MySql => format!(
            "{insert} ON DUPLICATE KEY UPDATE \
             holder = IF(expires_at_ms < ? OR holder = VALUES(holder), VALUES(holder), holder), \
             address = IF(holder = VALUES(holder), VALUES(address), address), \
             expires_at_ms = IF(holder = VALUES(holder), VALUES(expires_at_ms), expires_at_ms)"
        ),
        Engine::Sqlite | Engine::Postgres => format!(
            "{insert} ON CONFLICT (lease_key) DO UPDATE SET holder = excluded.holder, \
             address = excluded.address, expires_at_ms = excluded.expires_at_ms \
             WHERE fetch_leases.expires_at_ms < ? OR fetch_leases.holder = excluded.holder"
        ),
    }
}

/// PostgreSQL numbers its placeholders; the statements here have no `?` inside literals.
pub(super) fn placeholders(engine: Engine, sql: &str) -> String {
    if engine != Engine::Postgres {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_placeholders_are_numbered() {
        let s = Statements::new(Engine::Postgres);
        assert_eq!(
            s.renew_lease,
            "UPDATE fetch_leases SET expires_at_ms = $1 WHERE lease_key = $2 AND holder = $3"
        );
        assert!(s
            .claim_lease
            .ends_with("fetch_leases.expires_at_ms < $5 OR fetch_leases.holder = excluded.holder"));
        assert!(s
            .put_narinfo
            .contains("$18) ON CONFLICT (hash) DO UPDATE SET store_path = excluded.store_path"));
    }

    #[test]
    fn mysql_upserts_replace_all_but_the_key() {
        let s = Statements::new(Engine::MySql);
        assert_eq!(
            s.put_nar,
            "INSERT INTO nars (nar_file, file_size, nar_hash, created_at, last_access) VALUES (?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE file_size = VALUES(file_size), nar_hash = VALUES(nar_hash), \
             created_at = VALUES(created_at), last_access = VALUES(last_access)"
        );
        assert_eq!(s.claim_lease.matches('?').count(), 5);
        assert_eq!(
            s.get_side_file,
            "SELECT encoding, size, CAST(uploaded AS SIGNED) AS uploaded FROM side_files WHERE path = ?"
        );
    }
}
