//! Where NAR files live. One small trait; a local directory by default, or an S3 bucket (`s3`).

pub mod bufpool;
pub mod hot_tier;
pub(crate) mod local;
#[cfg(test)]
mod local_tests;
pub mod s3;
#[cfg(test)]
mod tests;
mod walk;

use std::{io, path::Path};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub use hot_tier::{HotTier, HotTierConfig, HotTierMetrics};
pub use local::LocalStore;
pub use s3::{ReadAhead, S3Config, S3Store, S3Timeouts};

/// A validated object name such as `<52 nixbase32>.nar.xz`, `<hash>.ls` or `log/<drv>`: the
/// path the cache serves it under, made from parsed protocol types only, never user text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlobKey(String);

impl BlobKey {
    /// Keys come from parsed protocol types only.
    pub fn for_nar(file: &nixcache_protocol::NarFile) -> Self {
        Self(file.file_name())
    }
    /// A listing or a build log: `<hash>.ls` or `log/<hash>-<name>.drv`.
    pub fn for_side_file(file: &nixcache_protocol::SideFile) -> Self {
        Self(file.to_string())
    }
    /// A build trace: `realisations/<hex>!<output>.doi` or `build-trace-v2/<drv hash>!<output>.doi`.
    pub fn for_build_trace(key: &nixcache_protocol::BuildTraceKey) -> Self {
        Self(key.storage_path())
    }
    /// A side file's path read back from its row, when it is one of the two kinds' paths: a row
    /// is not trusted to name a safe object.
    pub fn for_side_file_row(path: &str) -> Option<Self> {
        match nixcache_protocol::SideFile::parse(path) {
            Ok(file) => Some(Self::for_side_file(&file)),
            Err(_) if nixcache_protocol::BuildTraceKey::is_storage_path(path) => Some(Self(path.to_owned())),
            Err(_) => None,
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BlobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An inclusive byte range already checked against the object's size.
pub use nixcache_formats::range::ByteRange;

pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// An object a listing found: its name (a key's, for what the cache wrote), size and age.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    /// The key it is stored under; for a file not where the store puts that key, its path
    /// under the storage root.
    pub name: String,
    /// Whether it is where the store keeps the key `name` (a file elsewhere in a local store's
    /// tree, say `<root>/<file>` without its shard directory, is not: it is no key's object).
    pub keyed: bool,
    pub size: u64,
    /// When it was last written, where the backend says.
    pub modified: Option<std::time::SystemTime>,
}

/// Every object in storage, read page by page as it is consumed.
pub type Listing = BoxStream<'static, Result<ListedObject, StorageError>>;

/// An open object: its total size and a stream of the requested bytes.
pub struct BlobRead {
    pub size: u64,
    pub body: ByteStream,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("range {start}-{end} is outside object {key} of {size} bytes")]
    BadRange {
        key: String,
        start: u64,
        end: u64,
        size: u64,
    },
    // The messages name their cause too: most logs print only the top error's message.
    #[error("storage is out of space while {context}: {error}")]
    NoSpace {
        context: String,
        #[source]
        error: io::Error,
    },
    #[error("storage I/O failed while {context}: {error}")]
    Io {
        context: String,
        #[source]
        error: io::Error,
    },
    /// A remote backend (S3) refused or failed a request; `error` is the client's error.
    #[error("storage backend failed while {context}: {}", chain(.error))]
    Backend {
        context: String,
        #[source]
        error: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StorageError {
    /// Classifies an I/O error so a full disk gets its own status.
    pub fn io(context: impl Into<String>, error: io::Error) -> Self {
        let context = context.into();
        if error.raw_os_error() == Some(28) {
            Self::NoSpace { context, error }
        } else {
            Self::Io { context, error }
        }
    }
}

/// Displays an error with its sources, since SDK errors say little at the top ("service error").
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

#[allow(clippy::borrowed_box)] // thiserror hands over the field as it is
fn chain(error: &Box<dyn std::error::Error + Send + Sync>) -> ErrorChain<'_> {
    ErrorChain(&**error)
}

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

/// The blob storage every backend implements; the conformance suite in `tests.rs` runs against each.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Size of the object, or `None` when absent.
    async fn stat(&self, key: &BlobKey) -> Result<Option<u64>, StorageError>;
    /// Streams the object, or the given range of it.
    async fn get(&self, key: &BlobKey, range: Option<ByteRange>) -> Result<BlobRead, StorageError>;
    /// Stores a stream as the object, atomically: readers see all of it or nothing. Returns its size.
    async fn put_stream(&self, key: &BlobKey, body: ByteStream) -> Result<u64, StorageError>;
    /// Stores a finished file written by the cache (in its temp dir); the file is consumed.
    async fn put_file(&self, key: &BlobKey, staged: &Path) -> Result<(), StorageError> {
        let file = tokio::fs::File::open(staged)
            .await
            .map_err(|e| StorageError::io(format!("opening staged file for {key}"), e))?;
        let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
        self.put_stream(key, Box::pin(body)).await?;
        let _ = tokio::fs::remove_file(staged).await;
        Ok(())
    }
    /// Removes the object; `false` when it was not there.
    async fn delete(&self, key: &BlobKey) -> Result<bool, StorageError>;
    /// Checks the backend is reachable.
    async fn ping(&self) -> Result<(), StorageError>;
    /// A URL a client can GET the object (or a range of it) from directly, valid for
    /// `expires`; `None` where there is no such URL (the object is served from here).
    /// Whether the object exists is not checked.
    async fn presigned_get(
        &self,
        _key: &BlobKey,
        _expires: std::time::Duration,
    ) -> Result<Option<String>, StorageError> {
        Ok(None)
    }
    /// Lists every object, in no particular order; objects written or deleted meanwhile may or
    /// may not be seen.
    fn list(&self) -> Listing;
}
