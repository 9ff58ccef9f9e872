//! Listing a local store's directory tree (`<root>/<shard>/<file>`, `<root>/<dir>/<shard>/<file>`)
//! on a blocking thread, sent page by page through a bounded channel, so a listing of millions
//! of files takes little memory and stops when its reader does.

use std::{
    io,
    path::{Path, PathBuf},
};

use super::{ListedObject, Listing, StorageError};

/// Entries sent ahead of the reader.
const AHEAD: usize = 256;

/// Lists every regular file under `root` (symbolic links are not followed).
pub(super) fn list(root: PathBuf) -> Listing {
    let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
    tokio::task::spawn_blocking(move || {
        if let Err(err) = walk(&root, &tx) {
            let _ = tx.blocking_send(Err(StorageError::io(format!("listing {}", root.display()), err)));
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

type Sender = tokio::sync::mpsc::Sender<Result<ListedObject, StorageError>>;

/// Depth first; stops quietly once the reader is gone.
fn walk(root: &Path, tx: &Sender) -> io::Result<()> {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Removed meanwhile (an empty shard, say).
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let kind = match entry.file_type() {
                Ok(kind) => kind,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // deleted meanwhile
                Err(e) => return Err(e),
            };
            if kind.is_dir() {
                dirs.push(entry.path());
                continue;
            }
            let Ok(meta) = entry.metadata() else {
                continue; // deleted meanwhile
            };
            let (name, keyed) = name_of(root, &entry.path());
            let object = ListedObject {
                name,
                keyed,
                size: meta.len(),
                modified: meta.modified().ok(),
            };
            if tx.blocking_send(Ok(object)).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The key a file at `path` holds, `true`: its path under `root` without the shard directory
/// (the one before the file), when that is the shard the store puts it in and there is one.
/// Else its path under `root` as it is, `false`.
fn name_of(root: &Path, path: &Path) -> (String, bool) {
    let relative = path
        .strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned();
    let mut parts: Vec<&str> = relative.split('/').collect();
    let (Some(file), Some(shard)) = (parts.pop(), parts.pop()) else {
        return (relative, false);
    };
    if file.get(..2) != Some(shard) {
        return (relative, false);
    }
    parts.push(file);
    (parts.join("/"), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_drop_the_shard_only_where_it_fits() {
        let root = Path::new("/r");
        let name = |p: &str| name_of(root, &root.join(p));
        let keyed = |n: &str| (n.to_owned(), true);
        let stray = |n: &str| (n.to_owned(), false);
        assert_eq!(name("ab/abcd.nar.xz"), keyed("abcd.nar.xz"));
        assert_eq!(name("log/7s/7sq0-hello.drv"), keyed("log/7sq0-hello.drv"));
        assert_eq!(
            name("build-trace-v2/x.drv/de/dev.doi"),
            keyed("build-trace-v2/x.drv/dev.doi")
        );
        assert_eq!(name("xx/abcd.nar.xz"), stray("xx/abcd.nar.xz"));
        // Where no key is kept: at the root, or in a directory without the shard.
        assert_eq!(name("abcd.nar.xz"), stray("abcd.nar.xz"));
        assert_eq!(name("log/7sq0-hello.drv"), stray("log/7sq0-hello.drv"));
        assert_eq!(name("a/b/c/d"), stray("a/b/c/d"));
    }
}
