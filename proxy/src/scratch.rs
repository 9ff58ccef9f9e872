//! Where downloads and uploads in progress are written: `<data-dir>/tmp/<replica id>/`, one
//! directory per process, so processes sharing a data dir never remove each other's files.
//! What is left there is never valid (objects are renamed or uploaded out of it when whole).

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::Context;

/// A directory of another process unchanged this long belonged to one that died.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// Creates this process's directory under `<data_dir>/tmp`, removing those of processes that
/// died (unchanged for an hour; a live one writes as it downloads).
pub fn create(data_dir: &Path, replica_id: &str) -> anyhow::Result<PathBuf> {
    let root = data_dir.join("tmp");
    let own = root.join(replica_id);
    std::fs::create_dir_all(&own).with_context(|| format!("creating {}", own.display()))?;
    for entry in std::fs::read_dir(&root).with_context(|| format!("reading {}", root.display()))? {
        let path = entry?.path();
        if path != own
            && last_change(&path).is_some_and(|t| t.elapsed().unwrap_or_default() > ABANDONED_AFTER)
        {
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match removed {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed the temp files of a process that ended")
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "cannot remove old temp files")
                }
            }
        }
    }
    Ok(own)
}

/// Removes this process's directory (at exit).
pub fn remove(own: &Path) {
    if let Err(err) = std::fs::remove_dir_all(own) {
        if err.kind() != std::io::ErrorKind::NotFound {
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

    #[test]
    fn each_process_keeps_its_own_and_leaves_the_others() {
        let data = tempfile::tempdir().unwrap();
        let a = create(data.path(), "a").unwrap();
        std::fs::write(a.join("x.tmp"), b"partial").unwrap();
        let b = create(data.path(), "b").unwrap();
        assert!(a.join("x.tmp").exists(), "a live process's files stay");
        remove(&b);
        assert!(!b.exists() && a.exists());
        // Files of a process that ended long ago go at the next start.
        let old = SystemTime::now() - Duration::from_secs(7200);
        let dead = data.path().join("tmp").join("dead");
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::File::create(dead.join("y.tmp"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        std::fs::File::open(&dead).unwrap().set_modified(old).unwrap();
        create(data.path(), "c").unwrap();
        assert!(!dead.exists() && a.exists());
    }
}
