//! The proxy's own signing key: loaded from a file, or generated once in the data dir.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use nixcache_protocol::{KeyError, SigningKey};

/// File name of the generated key inside the data dir.
pub const GENERATED_SECRET: &str = "signing-key.sec";
/// The public half, written beside it for convenience.
pub const GENERATED_PUBLIC: &str = "signing-key.pub";

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read the secret key file {path}: {error}")]
    Read { path: PathBuf, error: io::Error },
    #[error("the secret key file {path} is not a Nix secret key: {error}")]
    Parse { path: PathBuf, error: KeyError },
    #[error("cannot write {path}: {error}")]
    Write { path: PathBuf, error: io::Error },
    #[error("{path} already exists; refusing to overwrite a key")]
    Exists { path: PathBuf },
    #[error("invalid key name: {0}")]
    Name(KeyError),
}

/// Reads a Nix secret key file.
pub fn read_secret_key(path: &Path) -> Result<SigningKey, KeyFileError> {
    let text = fs::read_to_string(path).map_err(|error| KeyFileError::Read {
        path: path.into(),
        error,
    })?;
    SigningKey::parse(text.trim()).map_err(|error| KeyFileError::Parse {
        path: path.into(),
        error,
    })
}

/// Uses `explicit` when given; else the key generated in `data_dir`, creating it on first start.
pub fn load_or_generate(
    explicit: Option<&Path>,
    data_dir: &Path,
    name: &str,
) -> Result<SigningKey, KeyFileError> {
    if let Some(path) = explicit {
        return read_secret_key(path);
    }
    let secret = data_dir.join(GENERATED_SECRET);
    if secret.exists() {
        return read_secret_key(&secret);
    }
    let key = SigningKey::generate(name).map_err(KeyFileError::Name)?;
    write_key_pair(&key, &secret, &data_dir.join(GENERATED_PUBLIC))?;
    tracing::info!(key = %key.public_key(), path = %secret.display(), "generated a new signing key");
    Ok(key)
}

/// Writes both halves; the secret with mode 0600 and never over an existing file.
pub fn write_key_pair(key: &SigningKey, secret: &Path, public: &Path) -> Result<(), KeyFileError> {
    write_new(secret, &key.to_secret_string(), 0o600)?;
    if let Err(err) = write_new(public, &key.public_key().to_string(), 0o644) {
        let _ = fs::remove_file(secret);
        return Err(err);
    }
    Ok(())
}

fn write_new(path: &Path, content: &str, mode: u32) -> Result<(), KeyFileError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|error| match error.kind() {
            io::ErrorKind::AlreadyExists => KeyFileError::Exists { path: path.into() },
            _ => KeyFileError::Write {
                path: path.into(),
                error,
            },
        })?;
    file.write_all(content.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| KeyFileError::Write {
            path: path.into(),
            error,
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_once_then_reused_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_generate(None, dir.path(), "host-a").unwrap();
        let second = load_or_generate(None, dir.path(), "other-name").unwrap();
        assert_eq!(first.public_key(), second.public_key());
        assert_eq!(second.name(), "host-a");
        let mode = fs::metadata(dir.path().join(GENERATED_SECRET))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let public = fs::read_to_string(dir.path().join(GENERATED_PUBLIC)).unwrap();
        assert_eq!(public, first.public_key().to_string());
    }

    #[test]
    fn never_overwrites_and_errors_do_not_leak_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate("k-1").unwrap();
        let (sec, publ) = (dir.path().join("s"), dir.path().join("p"));
        write_key_pair(&key, &sec, &publ).unwrap();
        let again = write_key_pair(&SigningKey::generate("k-2").unwrap(), &sec, &publ);
        assert!(matches!(again, Err(KeyFileError::Exists { .. })));
        assert_eq!(read_secret_key(&sec).unwrap().public_key(), key.public_key());

        fs::write(&sec, "k-1:not-base64!").unwrap();
        let msg = read_secret_key(&sec).unwrap_err().to_string();
        assert!(!msg.contains("not-base64"), "{msg}");
    }
}
