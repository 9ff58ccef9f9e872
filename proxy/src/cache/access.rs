//! Last-access tracking without a database write per hit: hits only note their key in memory
//! (narinfos, NARs, listings and logs), and a background task writes what was noted every
//! `--access-flush-interval`, in a few batched statements, with the flush time as the access
//! time. So an access is recorded at most one interval late, with that
//! resolution, and LRU eviction orders entries by it.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use nixcache_protocol::{NarFile, StorePathHash};

use crate::{
    db::{DbError, MetadataStore, Timestamp},
    tasks::Stopping,
};

#[derive(Default)]
struct Noted {
    narinfos: HashSet<StorePathHash>,
    nars: HashSet<NarFile>,
    /// Listings and logs, by path.
    side_files: HashSet<String>,
}

/// The accesses noted since the last flush. Disabled (`interval` zero), it notes nothing.
pub struct AccessLog {
    noted: Mutex<Noted>,
    interval: Duration,
}

impl AccessLog {
    pub fn new(interval: Duration) -> Self {
        Self {
            noted: Mutex::new(Noted::default()),
            interval,
        }
    }

    pub fn enabled(&self) -> bool {
        !self.interval.is_zero()
    }

    fn note(&self, f: impl FnOnce(&mut Noted)) {
        if self.enabled() {
            f(&mut self.noted.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    pub fn narinfo(&self, hash: &StorePathHash) {
        self.note(|n| {
            n.narinfos.insert(*hash);
        });
    }

    pub fn nar(&self, file: &NarFile) {
        self.note(|n| {
            if !n.nars.contains(file) {
                n.nars.insert(file.clone());
            }
        });
    }

    pub fn side_file(&self, path: &str) {
        self.note(|n| {
            if !n.side_files.contains(path) {
                n.side_files.insert(path.to_owned());
            }
        });
    }

    /// Writes what was noted; on failure it is noted again for the next flush.
    pub async fn flush(&self, db: &dyn MetadataStore) -> Result<usize, DbError> {
        let noted = std::mem::take(&mut *self.noted.lock().unwrap_or_else(|p| p.into_inner()));
        if noted.narinfos.is_empty() && noted.nars.is_empty() && noted.side_files.is_empty() {
            return Ok(0);
        }
        let narinfos: Vec<_> = noted.narinfos.iter().copied().collect();
        let nars: Vec<_> = noted.nars.iter().cloned().collect();
        let at = Timestamp::now();
        // What another replica recorded within half an interval stays: no write for nothing.
        let fresh = at - self.interval / 2;
        let mut result = if narinfos.is_empty() && nars.is_empty() {
            Ok(())
        } else {
            db.record_access(&narinfos, &nars, at, fresh).await
        };
        if result.is_ok() && !noted.side_files.is_empty() {
            let paths: Vec<String> = noted.side_files.iter().cloned().collect();
            result = db.touch_side_files(&paths, at).await;
        }
        match result {
            Ok(()) => Ok(narinfos.len() + nars.len() + noted.side_files.len()),
            Err(err) => {
                let mut again = self.noted.lock().unwrap_or_else(|p| p.into_inner());
                again.narinfos.extend(noted.narinfos);
                again.nars.extend(noted.nars);
                again.side_files.extend(noted.side_files);
                Err(err)
            }
        }
    }

    /// Flushes every interval until the process stops (the last flush is shutdown's); returns
    /// at once when access times are not recorded.
    pub async fn flush_every_interval(self: Arc<Self>, db: Arc<dyn MetadataStore>, stop: Stopping) {
        if !self.enabled() {
            return;
        }
        // Stops only between flushes: one cut mid-write would lose the times it took.
        while stop.pause(self.interval).await {
            if let Err(err) = self.flush(&*db).await {
                tracing::warn!(error = %err, "recording access times failed; retrying at the next flush");
            }
        }
    }
}
