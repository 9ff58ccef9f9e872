//! Where downloads and uploads in progress are written: `<data-dir>/tmp/<replica id>/`, one
//! directory per process, so processes sharing a data dir never remove each other's files.
//! What is left there is never valid (objects are renamed or uploaded out of it when whole).
//!
//! Each process holds an exclusive `flock` on `<its directory>/.lock` for as long as it runs
//! ([`Scratch`]); the kernel releases it when the process ends, however it ends. A starting
//! process removes the directories whose lock it can take: their owners are gone. How long a
//! directory has been unchanged says nothing (a live process serving only hits writes nothing),
//! except for directories of older versions, which have no lock file: those are removed when
//! unchanged for an hour, as those versions did.

use std::{
    fs::File,
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::Context;

/// The lock file in each process's directory.
pub const LOCK_FILE: &str = ".lock";

/// A directory without a lock file (an older version's), unchanged this long, belonged to a
/// process that died.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// This process's directory, and the lock that tells other processes it is in use: keep it for
/// as long as the process serves.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    /// Open, and so locked, until dropped.
    _lock: Option<File>,
}

impl Scratch {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates and locks this process's directory under `<data_dir>/tmp`, then removes those of
/// processes that ended.
pub fn create(data_dir: &Path, replica_id: &str) -> anyhow::Result<Scratch> {
    let root = data_dir.join("tmp");
    let own = root.join(replica_id);
    std::fs::create_dir_all(&own).with_context(|| format!("creating {}", own.display()))?;
    // Without a lock (a filesystem without `flock`) the process still runs; its directory is
    // only never taken as abandoned.
    let lock = lock_own(&own)
        .inspect_err(|err| {
            tracing::warn!(path = %own.display(), error = %err, "cannot lock the temp dir; \
                if this process dies, its temp files stay")
        })
        .ok();
    for entry in std::fs::read_dir(&root).with_context(|| format!("reading {}", root.display()))? {
        let path = entry?.path();
        if path != own {
            remove_if_abandoned(&path);
        }
    }
    Ok(Scratch {
        path: own,
        _lock: lock,
    })
}

/// Creates `own` and its lock file and locks it. A process starting meanwhile may take the lock
/// between the file's creation and the lock, and remove the directory: then it starts over.
fn lock_own(own: &Path) -> io::Result<File> {
    let path = own.join(LOCK_FILE);
    loop {
        std::fs::create_dir_all(own)?;
        let file = match File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
        {
            Ok(file) => file,
            // Removed between the two calls: again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let file = lock_exclusive(file, true)?.ok_or_else(|| io::Error::other("not locked"))?;
        let locked = file.metadata()?;
        match std::fs::metadata(&path) {
            Ok(now) if (now.dev(), now.ino()) == (locked.dev(), locked.ino()) => return Ok(file),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `file`, holding an exclusive `flock` on it (released when it is closed); `None` when another
/// open file holds the lock and `wait` is false.
fn lock_exclusive(file: File, wait: bool) -> io::Result<Option<File>> {
    let mut lock = fd_lock::RwLock::new(file);
    {
        let guard = if wait { lock.write() } else { lock.try_write() };
        match guard {
            // The guard would unlock when dropped; the lock is to last as long as the file is open.
            Ok(guard) => std::mem::forget(guard),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(lock.into_inner()))
}

/// Removes another process's directory if that process ended: its lock can be taken, or, for
/// an older version's directory without a lock file, it has been unchanged for an hour.
fn remove_if_abandoned(path: &Path) {
    let _lock = if path.is_dir() {
        match File::options().read(true).write(true).open(path.join(LOCK_FILE)) {
            Ok(file) => match lock_exclusive(file, false) {
                // Held until the directory is gone: its owner cannot be starting meanwhile.
                Ok(Some(lock)) => Some(lock),
                Ok(None) => return,
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "cannot lock another process's temp files");
                    return;
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound && unchanged_for_an_hour(path) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot open another process's lock file");
                return;
            }
        }
    } else if unchanged_for_an_hour(path) {
        None
    } else {
        return;
    };
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Ok(()) => tracing::info!(path = %path.display(), "removed the temp files of a process that ended"),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => tracing::warn!(path = %path.display(), error = %err, "cannot remove old temp files"),
    }
}

fn unchanged_for_an_hour(path: &Path) -> bool {
    last_change(path).is_some_and(|t| t.elapsed().unwrap_or_default() > ABANDONED_AFTER)
}

/// Removes this process's directory (at exit).
pub fn remove(own: &Path) {
    if let Err(err) = std::fs::remove_dir_all(own) {
        if err.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %own.display(), error = %err, "removing unfinished downloads failed");
        }
    }
}

/// The newest modification time of `path` or anything under it.
fn last_change(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let mut newest = meta.modified().ok()?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).ok()?.flatten() {
            if let Some(t) = last_change(&entry.path()) {
                newest = newest.max(t);
            }
        }
    }
    Some(newest)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Sets the modification time of `path` and everything under it back two hours.
    fn age(path: &Path) {
        let old = SystemTime::now() - 2 * ABANDONED_AFTER;
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                age(&entry.unwrap().path());
            }
        }
        File::open(path).unwrap().set_modified(old).unwrap();
    }

    #[test]
    fn a_live_process_keeps_its_directory_however_old() {
        let data = tempfile::tempdir().unwrap();
        let a = create(data.path(), "a").unwrap();
        std::fs::write(a.path().join("x.tmp"), b"partial").unwrap();
        age(a.path());
        let b = create(data.path(), "b").unwrap();
        assert!(a.path().join("x.tmp").exists(), "a live process's files stay");
        remove(b.path());
        assert!(!b.path().exists() && a.path().exists());
    }

    #[test]
    fn an_ended_process_loses_its_directory_however_new() {
        let data = tempfile::tempdir().unwrap();
        let a = create(data.path(), "a").unwrap();
        let a_path = a.path().to_owned();
        std::fs::write(a_path.join("x.tmp"), b"partial").unwrap();
        drop(a);
        let b = create(data.path(), "b").unwrap();
        assert!(!a_path.exists(), "the files of an ended process stay");
        assert!(b.path().join(LOCK_FILE).exists());
    }

    #[test]
    fn an_older_versions_directory_goes_after_an_hour() {
        let data = tempfile::tempdir().unwrap();
        let root = data.path().join("tmp");
        let (old, recent) = (root.join("old"), root.join("recent"));
        for dir in [&old, &recent] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("y.tmp"), b"partial").unwrap();
        }
        age(&old);
        create(data.path(), "c").unwrap();
        assert!(!old.exists() && recent.exists());
    }

    #[test]
    fn the_lock_is_held_while_the_scratch_lives() {
        let data = tempfile::tempdir().unwrap();
        let a = create(data.path(), "a").unwrap();
        let other = || {
            File::options()
                .write(true)
                .open(a.path().join(LOCK_FILE))
                .unwrap()
        };
        assert!(lock_exclusive(other(), false).unwrap().is_none());
        let path = a.path().to_owned();
        drop(a);
        let other = File::options().write(true).open(path.join(LOCK_FILE)).unwrap();
        assert!(lock_exclusive(other, false).unwrap().is_some());
    }
}
