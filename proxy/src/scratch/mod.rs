//! Where downloads and uploads in progress are written: `<data-dir>/tmp/<replica id>/`, one
//! directory per process, so processes sharing a data dir never remove each other's files.
//! What is left there is never valid (objects are renamed or uploaded out of it when whole).
//!
//! Each process holds an exclusive `flock` on `<its directory>/.lock` for as long as it runs
//! ([`Scratch`]); the kernel releases it when the process ends, however it ends. A process
//! removes, when it starts and then hourly, the directories whose lock it can take and in which
//! nothing changed for [`MIN_IDLE`] (a day): their owners are gone. The lock alone is not
//! trusted, since some shared filesystems grant every lock (NFSv3 mounted `nolock` keeps locks
//! local to each host); so each live process touches its lock file hourly, and a directory
//! changed within the day stays whatever its lock says. A day leaves room for a process frozen
//! for hours (a suspended VM, a hung mount) and costs only the disk space of a dead process's
//! partial downloads for that long. Directories of older versions, which have no lock file, are
//! removed when unchanged for an hour, as those versions did.

mod temp_path;

use std::{
    fs::File,
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{mpsc, Arc},
    time::{Duration, SystemTime},
};

use anyhow::Context;

pub use temp_path::{tempfile_in, TempPath};

/// The lock file in each process's directory.
pub const LOCK_FILE: &str = ".lock";

/// A directory without a lock file (an older version's), unchanged this long, belonged to a
/// process that died.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);
/// A directory whose lock can be taken is removed only once nothing in it changed this long.
pub const MIN_IDLE: Duration = Duration::from_secs(24 * 3600);
/// How often a live process touches its lock file and looks for directories to remove: far
/// more often than [`MIN_IDLE`], so a live process's directory never looks idle.
const UPKEEP_EVERY: Duration = Duration::from_secs(3600);

/// This process's directory, and the lock that tells other processes it is in use: keep it for
/// as long as the process serves.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    /// Stopped (and joined) first when dropped, then the lock goes with the last `Arc`.
    _upkeep: Option<Upkeep>,
    /// Open, and so locked, until dropped.
    _lock: Option<Arc<File>>,
}

impl Scratch {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates and locks this process's directory under `<data_dir>/tmp`, then removes those of
/// processes that ended; keeps its lock file fresh and looks again hourly while it lives.
pub fn create(data_dir: &Path, replica_id: &str) -> anyhow::Result<Scratch> {
    create_with(data_dir, replica_id, UPKEEP_EVERY)
}

fn create_with(data_dir: &Path, replica_id: &str, every: Duration) -> anyhow::Result<Scratch> {
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
        .ok()
        .map(Arc::new);
    sweep(&root, &own).with_context(|| format!("reading {}", root.display()))?;
    let upkeep = lock
        .as_ref()
        .map(|lock| Upkeep::start(Arc::clone(lock), root, own.clone(), every))
        .transpose()
        .context("starting the temp dir's upkeep thread")?;
    Ok(Scratch {
        path: own,
        _upkeep: upkeep,
        _lock: lock,
    })
}

/// Removes the directories under `root` but `own` whose process ended.
fn sweep(root: &Path, own: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path();
        if path != own {
            remove_if_abandoned(&path);
        }
    }
    Ok(())
}

/// A thread that touches the lock file and sweeps every `every`, until dropped. A thread, not a
/// task: both are blocking file operations, and `create` runs without a runtime in tests.
#[derive(Debug)]
struct Upkeep {
    /// Dropped to stop the thread at once.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upkeep {
    fn start(lock: Arc<File>, root: PathBuf, own: PathBuf, every: Duration) -> io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("scratch-upkeep".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    // Through the locked descriptor: on NFS, closing any other descriptor of
                    // the file would drop this process's lock.
                    if let Err(err) = lock.set_modified(SystemTime::now()) {
                        tracing::warn!(path = %own.display(), error = %err, "cannot touch the temp dir's lock file");
                    }
                    if let Err(err) = sweep(&root, &own) {
                        tracing::warn!(path = %root.display(), error = %err, "cannot look for old temp files");
                    }
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Upkeep {
    /// Stops the thread and waits for it: it holds the lock file, and the lock must be free once
    /// the scratch is dropped. It wakes at once; only a sweep in progress delays the join.
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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

/// Removes another process's directory if that process ended: its lock can be taken and
/// nothing in it changed for [`MIN_IDLE`], or, for an older version's directory without a
/// lock file, it has been unchanged for an hour.
fn remove_if_abandoned(path: &Path) {
    let _lock = if path.is_dir() {
        match File::options().read(true).write(true).open(path.join(LOCK_FILE)) {
            Ok(file) => match lock_exclusive(file, false) {
                // A free lock is not proof enough (see the module doc): only an idle directory
                // goes. The lock is held until the directory is gone: its owner cannot be
                // starting meanwhile.
                Ok(Some(lock)) if unchanged_for(path, MIN_IDLE) => Some(lock),
                Ok(_) => return,
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "cannot lock another process's temp files");
                    return;
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound && unchanged_for(path, ABANDONED_AFTER) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot open another process's lock file");
                return;
            }
        }
    } else if unchanged_for(path, ABANDONED_AFTER) {
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

fn unchanged_for(path: &Path, idle: Duration) -> bool {
    last_change(path).is_some_and(|t| t.elapsed().unwrap_or_default() > idle)
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

    /// Sets the modification time of `path` and everything under it back `by`.
    fn age(path: &Path, by: Duration) {
        let old = SystemTime::now() - by;
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                age(&entry.unwrap().path(), by);
            }
        }
        File::open(path).unwrap().set_modified(old).unwrap();
    }

    #[test]
    fn a_live_process_keeps_its_directory_however_old() {
        let data = tempfile::tempdir().unwrap();
        let a = create(data.path(), "a").unwrap();
        std::fs::write(a.path().join("x.tmp"), b"partial").unwrap();
        age(a.path(), 2 * MIN_IDLE);
        let b = create(data.path(), "b").unwrap();
        assert!(a.path().join("x.tmp").exists(), "a live process's files stay");
        remove(b.path());
        assert!(!b.path().exists() && a.path().exists());
    }

    #[test]
    fn an_ended_process_loses_its_directory_once_idle_for_a_day() {
        let data = tempfile::tempdir().unwrap();
        let a = create(data.path(), "a").unwrap();
        let a_path = a.path().to_owned();
        std::fs::write(a_path.join("x.tmp"), b"partial").unwrap();
        drop(a);
        create(data.path(), "b").unwrap();
        assert!(a_path.exists(), "removed a directory that changed within the day");
        age(&a_path, MIN_IDLE + Duration::from_secs(60));
        let c = create(data.path(), "c").unwrap();
        assert!(!a_path.exists(), "the files of an ended process stay");
        assert!(c.path().join(LOCK_FILE).exists());
    }

    /// On a filesystem that grants every lock (NFSv3 `nolock`), another host's live process
    /// looks unlocked: its directory stays while it changed within the day.
    #[test]
    fn a_free_lock_alone_does_not_make_a_directory_abandoned() {
        let data = tempfile::tempdir().unwrap();
        let other = data.path().join("tmp").join("other-host");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join(LOCK_FILE), b"").unwrap();
        std::fs::write(other.join("x.tmp"), b"partial").unwrap();
        age(&other, MIN_IDLE - Duration::from_secs(3600));
        create(data.path(), "b").unwrap();
        assert!(
            other.join("x.tmp").exists(),
            "removed a recently changed directory"
        );
    }

    #[test]
    fn a_live_process_keeps_its_lock_file_fresh_and_sweeps_while_it_runs() {
        let data = tempfile::tempdir().unwrap();
        let a = create_with(data.path(), "a", Duration::from_millis(20)).unwrap();
        age(a.path(), 2 * MIN_IDLE);
        // A process that ended after `a` started, idle for long.
        let dead = data.path().join("tmp").join("dead");
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::write(dead.join(LOCK_FILE), b"").unwrap();
        age(&dead, 2 * MIN_IDLE);
        let idle = || unchanged_for(a.path(), Duration::from_secs(60));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while idle() || dead.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the upkeep thread did nothing"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let lock = a.path().join(LOCK_FILE);
        assert!(
            !unchanged_for(&lock, Duration::from_secs(60)),
            "the lock file was not touched"
        );
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
        age(&old, 2 * ABANDONED_AFTER);
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
