//! What can go wrong asking an upstream, and the metric label for each.

use std::time::Duration;

use crate::metrics::UpstreamFailure;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{url}: no response within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("{url}: {error}")]
    Request {
        url: String,
        #[source]
        error: reqwest::Error,
    },
    /// The HTTP client could not be built (at start: TLS roots, settings).
    #[error("building the HTTP client for the upstreams failed: {error}")]
    Client {
        #[source]
        error: reqwest::Error,
    },
    /// The task asking `url` ended without an answer (it panicked).
    #[error("{url}: the lookup task failed: {error}")]
    Task {
        url: String,
        #[source]
        error: tokio::task::JoinError,
    },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {reason}")]
    Invalid { url: String, reason: String },
    /// No upstream asked had the narinfo, and `upstreams` were not asked: they are down.
    #[error("{upstreams} upstream cache(s) down, skipped until a probe gets an answer")]
    Down {
        upstreams: usize,
        /// When to ask again: the next probe.
        retry_after: Duration,
    },
    /// A redirect the outbound policy refused (another origin, or too many).
    #[error("{url}: {error}: {reason}")]
    Redirect {
        url: String,
        reason: String,
        #[source]
        error: reqwest::Error,
    },
}

impl UpstreamError {
    /// The `reason` label of the error metric.
    pub fn reason(&self) -> UpstreamFailure {
        match self {
            _ if self.is_timeout() => UpstreamFailure::Timeout,
            Self::Request { .. } | Self::Timeout { .. } | Self::Client { .. } | Self::Task { .. } => {
                UpstreamFailure::Request
            }
            Self::Status { .. } => UpstreamFailure::Status,
            Self::Invalid { .. } => UpstreamFailure::Invalid,
            Self::Redirect { .. } => UpstreamFailure::Redirect,
            Self::Down { .. } => UpstreamFailure::Down,
        }
    }

    /// True when the upstream did not answer (no connection, a timeout) or answered that it
    /// cannot serve at all (5xx): what says it is down, unlike a refused or malformed answer.
    pub fn means_unavailable(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Request { .. } => true,
            Self::Status { status, .. } => *status >= 500,
            Self::Invalid { .. }
            | Self::Redirect { .. }
            | Self::Client { .. }
            | Self::Task { .. }
            | Self::Down { .. } => false,
        }
    }

    pub fn is_timeout(&self) -> bool {
        match self {
            Self::Timeout { .. } => true,
            Self::Request { error, .. } => error.is_timeout(),
            Self::Status { .. }
            | Self::Invalid { .. }
            | Self::Redirect { .. }
            | Self::Client { .. }
            | Self::Task { .. }
            | Self::Down { .. } => false,
        }
    }
}
