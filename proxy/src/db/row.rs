//! Rows to domain records and back, the same for every engine: every column is text or a 64-bit
//! integer, read through [`SqlDb`].

use std::str::FromStr;

use nixcache_protocol::{Compression, NarFile, NarInfo, Sha256Hash, Signature, StorePath};

use super::{
    sql::{Arg, SqlDb},
    DbError, Lease, LeaseKey, NarInfoRecord, NarRecord, PinRecord, ProxySignature, SideFileAccess,
    SideFileRecord, Timestamp, UploadRecord,
};

pub(super) fn corrupt(key: &str, field: &'static str, reason: impl ToString) -> DbError {
    DbError::Corrupt {
        key: key.to_string(),
        field,
        reason: reason.to_string(),
    }
}

/// Column accessors for one row, naming the row's key in errors.
struct Cols<'r, DB: SqlDb> {
    row: &'r DB::Row,
    key: String,
}

impl<DB: SqlDb> Cols<'_, DB> {
    fn opt_text(&self, column: &'static str) -> Result<Option<String>, DbError> {
        Ok(DB::text(self.row, column)?)
    }
    fn text(&self, column: &'static str) -> Result<String, DbError> {
        self.opt_text(column)?
            .ok_or_else(|| corrupt(&self.key, column, "NULL"))
    }
    fn int(&self, column: &'static str) -> Result<i64, DbError> {
        DB::int(self.row, column)?.ok_or_else(|| corrupt(&self.key, column, "NULL"))
    }
    fn size(&self, column: &'static str) -> Result<Option<u64>, DbError> {
        DB::int(self.row, column)?
            .map(|v| u64::try_from(v).map_err(|e| corrupt(&self.key, column, e)))
            .transpose()
    }
    fn req_size(&self, column: &'static str) -> Result<u64, DbError> {
        self.size(column)?
            .ok_or_else(|| corrupt(&self.key, column, "NULL"))
    }
    /// A 0/1 flag.
    fn flag(&self, column: &'static str) -> Result<bool, DbError> {
        match self.int(column)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(corrupt(&self.key, column, format!("{v} is neither 0 nor 1"))),
        }
    }
    fn path(&self, column: &'static str, s: &str) -> Result<StorePath, DbError> {
        StorePath::from_base_name(s).map_err(|e| corrupt(&self.key, column, e))
    }
    fn hash(&self, column: &'static str, s: &str) -> Result<Sha256Hash, DbError> {
        Sha256Hash::from_str(s).map_err(|e| corrupt(&self.key, column, e))
    }
    fn sig(&self, column: &'static str, s: &str) -> Result<Signature, DbError> {
        Signature::parse(s).map_err(|e| corrupt(&self.key, column, e))
    }
}

/// A row of `narinfos`, selected with the first 15 of `statements::NARINFO_COLUMNS`.
pub(super) fn narinfo<DB: SqlDb>(row: &DB::Row) -> Result<NarInfoRecord, DbError> {
    let key = DB::text(row, "hash")?.unwrap_or_default();
    let c = Cols::<DB> { row, key };
    let info = NarInfo {
        store_path: c.path("store_path", &c.text("store_path")?)?,
        url: c.text("upstream_url")?,
        compression: Compression::parse(&c.text("compression")?),
        file_hash: c
            .opt_text("file_hash")?
            .map(|h| c.hash("file_hash", &h))
            .transpose()?,
        file_size: c.size("file_size")?,
        nar_hash: c.hash("nar_hash", &c.text("nar_hash")?)?,
        nar_size: c
            .size("nar_size")?
            .ok_or_else(|| corrupt(&c.key, "nar_size", "NULL"))?,
        references: c
            .text("refs")?
            .split_whitespace()
            .map(|r| c.path("refs", r))
            .collect::<Result<_, _>>()?,
        deriver: c
            .opt_text("deriver")?
            .map(|d| c.path("deriver", &d))
            .transpose()?,
        sigs: c
            .text("sigs")?
            .lines()
            .map(|s| c.sig("sigs", s))
            .collect::<Result<_, _>>()?,
        ca: c.opt_text("ca")?,
    };
    let nar_file = NarFile::parse(&c.text("nar_file")?).map_err(|e| corrupt(&c.key, "nar_file", e))?;
    let proxy_sig = match (c.opt_text("proxy_key")?, c.opt_text("proxy_sig")?) {
        (Some(public_key), Some(sig)) => Some(ProxySignature {
            public_key,
            sig: c.sig("proxy_sig", &sig)?,
        }),
        _ => None,
    };
    Ok(NarInfoRecord {
        info,
        nar_file,
        proxy_sig,
    })
}

/// The values of `statements::NARINFO_COLUMNS` for `rec`, recorded (and accessed) `now`.
pub(super) fn narinfo_args(rec: &NarInfoRecord, now: Timestamp) -> Result<Vec<Arg>, DbError> {
    let info = &rec.info;
    let key = info.store_path.hash().to_string();
    let size = |v: u64| i64::try_from(v).map_err(|e| corrupt(&key, "size", e));
    Ok(vec![
        key.as_str().into(),
        info.store_path.to_string().into(),
        rec.nar_file.file_name().into(),
        info.compression.as_str().into(),
        info.file_hash.map(|h| h.to_string()).into(),
        info.file_size.map(size).transpose()?.into(),
        info.nar_hash.to_string().into(),
        size(info.nar_size)?.into(),
        join(&info.references, " ").into(),
        info.deriver.as_ref().map(|d| d.to_string()).into(),
        info.ca.clone().into(),
        join(&info.sigs, "\n").into(),
        info.url.as_str().into(),
        rec.proxy_sig.as_ref().map(|p| p.public_key.clone()).into(),
        rec.proxy_sig.as_ref().map(|p| p.sig.to_string()).into(),
        now.unix_secs().into(),
        now.unix_ms().into(),
        Option::<i64>::None.into(),
    ])
}

fn join<T: ToString>(items: &[T], sep: &str) -> String {
    items.iter().map(T::to_string).collect::<Vec<_>>().join(sep)
}

/// A row of `nars` (`file_size, nar_hash`).
pub(super) fn nar<DB: SqlDb>(row: &DB::Row, file: &NarFile) -> Result<NarRecord, DbError> {
    let c = Cols::<DB> {
        row,
        key: file.file_name(),
    };
    Ok(NarRecord {
        nar_file: file.clone(),
        file_size: c
            .size("file_size")?
            .ok_or_else(|| corrupt(&c.key, "file_size", "NULL"))?,
        nar_hash: c.hash("nar_hash", &c.text("nar_hash")?)?,
    })
}

/// The values of `nars`' columns for `rec`, recorded (and accessed) `now`.
pub(super) fn nar_args(rec: &NarRecord, now: Timestamp) -> Result<Vec<Arg>, DbError> {
    let key = rec.nar_file.file_name();
    let size = i64::try_from(rec.file_size).map_err(|e| corrupt(&key, "file_size", e))?;
    Ok(vec![
        key.into(),
        size.into(),
        rec.nar_hash.to_string().into(),
        now.unix_secs().into(),
        now.unix_ms().into(),
    ])
}

/// A row of `fetch_leases` (`holder, address, expires_at_ms`).
pub(super) fn lease<DB: SqlDb>(row: &DB::Row, key: &LeaseKey) -> Result<Lease, DbError> {
    let c = Cols::<DB> {
        row,
        key: key.to_string(),
    };
    Ok(Lease {
        key: key.clone(),
        holder: c.text("holder")?,
        address: c.text("address")?,
        expires_at: Timestamp::from_unix_ms(c.int("expires_at_ms")?),
    })
}

/// A row of `uploads` (`nar_file, file_size, nar_hash, nar_size`).
pub(super) fn upload<DB: SqlDb>(row: &DB::Row) -> Result<UploadRecord, DbError> {
    let key = DB::text(row, "nar_file")?.unwrap_or_default();
    let c = Cols::<DB> { row, key };
    let size = |column| c.size(column)?.ok_or_else(|| corrupt(&c.key, column, "NULL"));
    Ok(UploadRecord {
        nar_file: NarFile::parse(&c.key).map_err(|e| corrupt(&c.key, "nar_file", e))?,
        file_size: size("file_size")?,
        nar_hash: c.hash("nar_hash", &c.text("nar_hash")?)?,
        nar_size: size("nar_size")?,
    })
}

/// The values of `uploads`' columns for `rec`, recorded `now`.
pub(super) fn upload_args(rec: &UploadRecord, now: Timestamp) -> Result<Vec<Arg>, DbError> {
    let key = rec.nar_file.file_name();
    let size = |v: u64| i64::try_from(v).map_err(|e| corrupt(&key, "size", e));
    Ok(vec![
        key.as_str().into(),
        size(rec.file_size)?.into(),
        rec.nar_hash.to_string().into(),
        size(rec.nar_size)?.into(),
        now.unix_secs().into(),
    ])
}

/// Side file paths and encodings: what the MySQL columns hold (`VARCHAR(255)` and `(16)`, ASCII),
/// checked on every engine so that they all accept the same.
const SIDE_PATH_MAX: usize = 255;
const SIDE_ENCODING_MAX: usize = 16;

/// A row of `side_files` (`encoding, size, uploaded`) stored under `path`.
pub(super) fn side_file<DB: SqlDb>(row: &DB::Row, path: &str) -> Result<SideFileRecord, DbError> {
    let c = Cols::<DB> {
        row,
        key: path.to_string(),
    };
    Ok(SideFileRecord {
        path: path.to_string(),
        encoding: c.text("encoding")?,
        size: c.req_size("size")?,
        uploaded: c.flag("uploaded")?,
    })
}

/// A row of `side_files` in LRU order (`path, size, uploaded, last_access`).
pub(super) fn side_file_access<DB: SqlDb>(row: &DB::Row) -> Result<SideFileAccess, DbError> {
    let key = DB::text(row, "path")?.unwrap_or_default();
    let c = Cols::<DB> { row, key };
    Ok(SideFileAccess {
        path: c.text("path")?,
        size: c.req_size("size")?,
        uploaded: c.flag("uploaded")?,
        last_access: Timestamp::from_unix_ms(c.int("last_access")?),
    })
}

/// The values of `side_files`' columns for `rec`, recorded (and accessed) `now`. Refuses a path or
/// an encoding that is not printable ASCII of the columns' length (or a path with a leading `/`).
pub(super) fn side_file_args(rec: &SideFileRecord, now: Timestamp) -> Result<Vec<Arg>, DbError> {
    let path = &rec.path;
    let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    if path.is_empty() || path.len() > SIDE_PATH_MAX || path.starts_with('/') || !printable(path) {
        return Err(corrupt(
            path,
            "path",
            format!("not 1 to {SIDE_PATH_MAX} printable ASCII characters without a leading /"),
        ));
    }
    if rec.encoding.len() > SIDE_ENCODING_MAX || !printable(&rec.encoding) {
        return Err(corrupt(
            path,
            "encoding",
            format!(
                "{:?} is not at most {SIDE_ENCODING_MAX} printable ASCII characters",
                rec.encoding
            ),
        ));
    }
    let size = i64::try_from(rec.size).map_err(|e| corrupt(path, "size", e))?;
    Ok(vec![
        path.as_str().into(),
        rec.encoding.as_str().into(),
        size.into(),
        i64::from(rec.uploaded).into(),
        now.unix_secs().into(),
        now.unix_ms().into(),
    ])
}

/// A row of `pins` (`hash, store_path, closure, declared, created_at`).
pub(super) fn pin<DB: SqlDb>(row: &DB::Row) -> Result<PinRecord, DbError> {
    let key = DB::text(row, "hash")?.unwrap_or_default();
    let c = Cols::<DB> { row, key };
    let path = c.path("store_path", &c.text("store_path")?)?;
    if path.hash().to_string() != c.key {
        return Err(corrupt(&c.key, "store_path", "its hash is not the row's"));
    }
    Ok(PinRecord {
        path,
        closure: c.flag("closure")?,
        declared: c.flag("declared")?,
        created_at: Timestamp::from_unix_ms(c.int("created_at")?.saturating_mul(1000)),
    })
}

/// The values of `pins`' columns for `rec`, in the order of `pin`.
pub(super) fn pin_args(rec: &PinRecord) -> Vec<Arg> {
    vec![
        rec.path.hash().to_string().into(),
        rec.path.to_string().into(),
        i64::from(rec.closure).into(),
        i64::from(rec.declared).into(),
        rec.created_at.unix_secs().into(),
    ]
}

/// A row of `narinfos` for a closure walk (`hash, refs, file_size, nar_size, evicted_at`).
pub(super) fn path_links<DB: SqlDb>(row: &DB::Row) -> Result<super::PathLinks, DbError> {
    let key = DB::text(row, "hash")?.unwrap_or_default();
    let c = Cols::<DB> { row, key };
    let hash = nixcache_protocol::StorePathHash::parse(&c.key).map_err(|e| corrupt(&c.key, "hash", e))?;
    let references = c
        .text("refs")?
        .split_ascii_whitespace()
        .map(|r| c.path("refs", r).map(|p| *p.hash()))
        .collect::<Result<_, _>>()?;
    Ok(super::PathLinks {
        hash,
        references,
        bytes: c.size("file_size")?.map_or_else(|| c.req_size("nar_size"), Ok)?,
        live: DB::int(row, "evicted_at")?.is_none(),
    })
}
