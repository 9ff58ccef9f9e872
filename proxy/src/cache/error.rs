//! What can go wrong serving from the cache; `http::error` maps each to a status.

use std::sync::Arc;

use crate::{db::DbError, metrics::LookupResult, storage::StorageError, upstream::UpstreamError};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("not found")]
    NotFound,
    /// An uploaded NAR no longer stored (evicted, or dropped as damaged): it exists nowhere else.
    #[error("gone: an uploaded NAR no longer stored")]
    Gone,
    #[error("upstream failed: {0}")]
    Upstream(UpstreamError),
    #[error("upstream data failed verification: {reason}{}", cause(.source))]
    Verification {
        reason: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The fill this request waited for ended without the NAR.
    #[error("the upstream download failed: {0}")]
    FillFailed(&'static str),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("another replica: {reason}{}", cause(.source))]
    Peer {
        reason: String,
        #[source]
        source: Option<BoxError>,
    },
    #[error("range not satisfiable for an object of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("{0}")]
    Shared(Arc<CacheError>),
    #[error("internal error: {context}{}", cause(.source))]
    Internal {
        context: String,
        #[source]
        source: Option<BoxError>,
    },
    /// Too many fills (or temp bytes) already: the client should come back after `retry_after`.
    #[error("too many downloads in progress")]
    Busy { retry_after: std::time::Duration },
    /// The fill was cancelled because every client left.
    #[error("the download was cancelled: every client left")]
    Abandoned,
}

/// A cause of any type, kept as the error's source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `: <cause>` when there is one: most logs print only the top error's message.
fn cause(source: &Option<BoxError>) -> String {
    source.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
}

impl CacheError {
    pub(super) fn unverified(reason: impl Into<String>) -> Self {
        Self::Verification {
            reason: reason.into(),
            source: None,
        }
    }

    pub(super) fn peer(reason: impl Into<String>, source: Option<BoxError>) -> Self {
        Self::Peer {
            reason: reason.into(),
            source,
        }
    }

    pub(super) fn internal(context: impl Into<String>, source: Option<BoxError>) -> Self {
        Self::Internal {
            context: context.into(),
            source,
        }
    }

    /// Work that panicked, with the panic's message when it has one.
    pub(super) fn panicked(what: &str, payload: &(dyn std::any::Any + Send)) -> Self {
        let message = (payload.downcast_ref::<&str>().copied())
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("no message");
        Self::internal(format!("{what} panicked: {message}"), None)
    }

    /// A task (such as a `spawn_blocking` closure) that panicked or was cancelled.
    pub(super) fn task_failed(what: &str, error: tokio::task::JoinError) -> Self {
        Self::internal(format!("{what} failed"), Some(Box::new(error)))
    }

    /// Whether the object is not there (also when told by a shared lookup).
    pub fn is_not_found(&self) -> bool {
        self.outcome() == LookupResult::NotFound
    }

    /// The `result` label of a failed lookup.
    pub(super) fn outcome(&self) -> LookupResult {
        match self {
            Self::NotFound | Self::Gone => LookupResult::NotFound,
            Self::Busy { .. } => LookupResult::Busy,
            Self::Shared(inner) => inner.outcome(),
            _ => LookupResult::Error,
        }
    }
}
