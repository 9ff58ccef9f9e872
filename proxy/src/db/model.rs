//! Domain records stored in the metadata database.

use nixcache_protocol::{NarFile, NarInfo, Sha256Hash, Signature};

use super::Timestamp;

/// The proxy's own signature over a narinfo, with the public key that made it, so a changed key
/// is noticed and the signature made again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySignature {
    pub public_key: String,
    pub sig: Signature,
}

/// A narinfo verified from an upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarInfoRecord {
    /// As the upstream sent it, with its signatures; `url` is the NAR's absolute upstream URL.
    pub info: NarInfo,
    /// The name under which this proxy serves (and stores) the NAR.
    pub nar_file: NarFile,
    pub proxy_sig: Option<ProxySignature>,
}

impl NarInfoRecord {
    /// Uploaded by a client: its URL is this cache's own (`nar/<file>`), so once its NAR is
    /// evicted it cannot be fetched again.
    pub fn uploaded(&self) -> bool {
        is_uploaded_url(&self.info.url)
    }
}

/// Whether a narinfo's URL is relative, as an uploaded one's is (an upstream's is absolute).
pub fn is_uploaded_url(url: &str) -> bool {
    !url.contains("://")
}

/// A NAR file present in storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarRecord {
    pub nar_file: NarFile,
    pub file_size: u64,
    /// The verified NarHash of its content.
    pub nar_hash: Sha256Hash,
}

/// What a fetch lease is for: one upstream download of a NAR file, or one narinfo lookup.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LeaseKey(String);

impl LeaseKey {
    pub fn nar(file: &nixcache_protocol::NarFile) -> Self {
        Self(format!("nar/{}", file.file_name()))
    }
    pub fn narinfo(hash: &nixcache_protocol::StorePathHash) -> Self {
        Self(format!("narinfo/{hash}"))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A replica's claim to do one fetch. Rows with an expiry, renewed while the fetch progresses:
/// a replica that dies simply stops renewing, and another takes over after `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub key: LeaseKey,
    /// The replica's id (unique per process).
    pub holder: String,
    /// Where other replicas can stream the fetch in progress (`http://POD_IP:PORT`).
    pub address: String,
    /// By the holder's clock.
    pub expires_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseClaim {
    /// The caller holds the lease now (it was free, expired, or already the caller's).
    Acquired,
    /// Another replica holds it.
    Held(Lease),
}

/// What is stored, for GC and the size metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Sum of the stored NAR files' sizes.
    pub nar_bytes: u64,
    pub nars: u64,
    pub narinfos: u64,
    /// Stored side files (NAR listings and build logs), counted apart from the NARs.
    pub side_files: u64,
    /// Sum of the stored side files' sizes.
    pub side_bytes: u64,
}

/// Where a least-recently-used scan stopped: the last row's access time and key. Rows come in
/// `(last_access, key)` order, so the next page starts strictly after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessCursor {
    pub last_access: Timestamp,
    pub key: String,
}

/// A narinfo in least-recently-used order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarinfoAccess {
    pub hash: nixcache_protocol::StorePathHash,
    pub nar_file: NarFile,
    pub last_access: Timestamp,
    /// Uploaded by a client: its NAR cannot be fetched again once evicted.
    pub uploaded: bool,
}

/// A stored NAR in least-recently-used order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarAccess {
    pub nar_file: NarFile,
    pub file_size: u64,
    pub last_access: Timestamp,
}

impl NarinfoAccess {
    pub fn cursor(&self) -> AccessCursor {
        AccessCursor {
            last_access: self.last_access,
            key: self.hash.to_string(),
        }
    }
}

impl SideFileAccess {
    pub fn cursor(&self) -> AccessCursor {
        AccessCursor {
            last_access: self.last_access,
            key: self.path.clone(),
        }
    }
}

impl NarAccess {
    pub fn cursor(&self) -> AccessCursor {
        AccessCursor {
            last_access: self.last_access,
            key: self.nar_file.file_name(),
        }
    }
}

impl LeaseKey {
    /// The one garbage collection allowed at a time across every replica and CronJob.
    pub fn gc() -> Self {
        Self("gc".into())
    }
    /// The one scrub pass (re-hashing stored NARs) at a time across every replica.
    pub fn scrub() -> Self {
        Self("scrub".into())
    }
    /// The one `nixcache fsck` at a time across every replica and CronJob.
    pub fn fsck() -> Self {
        Self("fsck".into())
    }
}

/// A NAR file a client uploaded whose narinfo has not come yet: stored but invisible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadRecord {
    pub nar_file: NarFile,
    pub file_size: u64,
    /// Computed here by decompressing the upload.
    pub nar_hash: Sha256Hash,
    pub nar_size: u64,
}

/// A pending upload with the time it was recorded (whole seconds), for `nixcache fsck`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingUpload {
    pub upload: UploadRecord,
    pub created_at: Timestamp,
}

/// A stored side file: a NAR listing or a build log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideFileRecord {
    /// The URL path without the leading slash: `<hash>.ls` or `log/<drv base name>`; ASCII, at
    /// most 255 bytes.
    pub path: String,
    /// The Content-Encoding the stored bytes are in (`br`, `gzip`, `zstd`, …), `""` for none.
    pub encoding: String,
    /// Bytes stored.
    pub size: u64,
    /// Uploaded by a client: it cannot be fetched again once deleted.
    pub uploaded: bool,
}

/// A side file in least-recently-used order, for GC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideFileAccess {
    pub path: String,
    pub size: u64,
    pub uploaded: bool,
    pub last_access: Timestamp,
}

/// A store path GC never evicts; with `closure`, nor anything it references (as far as the cache
/// holds narinfos for them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinRecord {
    pub path: nixcache_protocol::StorePath,
    pub closure: bool,
    /// From `serve --pin` (a NixCache's `spec.pins`): kept in line with that list, not removed by hand.
    pub declared: bool,
    /// Whole seconds.
    pub created_at: Timestamp,
}

/// What a closure walk reads of a narinfo, live or evicted (an evicted one still names its
/// references: what is behind it may be cached).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathLinks {
    pub hash: nixcache_protocol::StorePathHash,
    pub references: Vec<nixcache_protocol::StorePathHash>,
    /// Its NAR file's size (NarSize where there is no FileSize).
    pub bytes: u64,
    /// Not evicted: the cache holds it.
    pub live: bool,
}
