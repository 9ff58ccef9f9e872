//! In-memory copies of what hits need, so a warm narinfo or NAR lookup touches no database:
//! rendered narinfos (with their records, which prefetching follows) and the sizes of stored NAR
//! files. Bounded by bytes, with a TTL that bounds
//! how long another process's change (a GC run) can go unseen here.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use moka::sync::Cache;
use nixcache_protocol::{Compression, NarFile, Sha256Hash, StorePathHash};

use crate::db::{NarInfoRecord, NarRecord};

pub struct HotCache {
    narinfos: Cache<StorePathHash, HotNarinfo>,
    nar_sizes: Cache<NarFile, StoredNar>,
}

/// A narinfo as served, and the record it was rendered from.
#[derive(Clone, Debug)]
pub struct HotNarinfo {
    pub text: Bytes,
    pub record: Arc<NarInfoRecord>,
}

/// What serving a stored NAR file needs to know besides its bytes.
#[derive(Clone, Copy, Debug)]
pub struct StoredNar {
    pub size: u64,
    /// Whether its name fixes its bytes (see [`name_fixes_bytes`]).
    pub fixed_by_name: bool,
}

impl StoredNar {
    pub fn of(nar: &NarRecord) -> Self {
        Self {
            size: nar.file_size,
            fixed_by_name: name_fixes_bytes(&nar.nar_file, nar.nar_hash),
        }
    }
}

/// A file is named by its FileHash, which fixes its bytes, or (when its narinfo had none) by
/// its NarHash, which fixes only what it decompresses to: another download of it may hold
/// other bytes. Uncompressed, the two are one.
pub fn name_fixes_bytes(file: &NarFile, nar_hash: Sha256Hash) -> bool {
    file.compression == Compression::None || file.hash != nar_hash
}

impl HotCache {
    /// `max_bytes` of narinfos, each counted at twice its text (the record holds about as
    /// much again); NAR entries are small and counted as 64 bytes each.
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let narinfos = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_, hot: &HotNarinfo| u32::try_from(2 * hot.text.len() + 64).unwrap_or(u32::MAX))
            .time_to_live(ttl)
            .build();
        let nar_sizes = Cache::builder()
            .max_capacity((max_bytes / 64).max(1))
            .time_to_live(ttl)
            .build();
        Self { narinfos, nar_sizes }
    }

    pub fn narinfo(&self, hash: &StorePathHash) -> Option<HotNarinfo> {
        self.narinfos.get(hash)
    }

    pub fn put_narinfo(&self, hash: StorePathHash, hot: HotNarinfo) {
        self.narinfos.insert(hash, hot);
    }

    pub fn forget_narinfo(&self, hash: &StorePathHash) {
        self.narinfos.invalidate(hash);
    }

    pub fn nar(&self, file: &NarFile) -> Option<StoredNar> {
        self.nar_sizes.get(file)
    }

    pub fn put_nar(&self, file: NarFile, nar: StoredNar) {
        self.nar_sizes.insert(file, nar);
    }

    pub fn forget_nar(&self, file: &NarFile) {
        self.nar_sizes.invalidate(file);
    }
}
