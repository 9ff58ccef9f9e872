//! Temp files of this process's scratch dir: unique names, and a path removed when dropped.

use std::{
    io,
    path::{Path, PathBuf},
};

/// A unique temp path for the object `name` (a blob key) in `dir`.
pub fn tempfile_in(dir: &Path, name: &impl std::fmt::Display) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!("{name}.{}.{n}.tmp", std::process::id()))
}

/// A temp file's path, removed when this is dropped however the work on the file ends: an
/// error, or the future doing it dropped (a client that hung up). Nothing is created here.
#[derive(Debug)]
pub struct TempPath {
    path: PathBuf,
    armed: bool,
}

impl TempPath {
    /// A unique path for `name` in `dir` ([`tempfile_in`]).
    pub fn new_in(dir: &Path, name: &impl std::fmt::Display) -> Self {
        Self {
            path: tempfile_in(dir, name),
            armed: true,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the file where it is (it was renamed away, or someone else removes it).
    pub fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // One unlink, on whatever thread drops this: not worth a trip to the blocking pool.
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a temp file"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_temp_path_is_removed_when_dropped_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dropped = TempPath::new_in(dir.path(), &"a");
        std::fs::write(dropped.path(), b"partial").unwrap();
        let path = dropped.path().to_owned();
        drop(dropped);
        assert!(!path.exists());
        // Never created: nothing to remove, nothing to complain about.
        drop(TempPath::new_in(dir.path(), &"a"));
        let kept = TempPath::new_in(dir.path(), &"b");
        std::fs::write(kept.path(), b"whole").unwrap();
        let path = kept.path().to_owned();
        kept.keep();
        assert!(path.exists());
    }
}
