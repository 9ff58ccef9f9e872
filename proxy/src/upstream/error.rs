//! What can go wrong asking an upstream, and the metric label for each.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{url}: no response within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("{url}: {error}")]
    Request { url: String, error: reqwest::Error },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {reason}")]
    Invalid { url: String, reason: String },
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
    pub fn reason(&self) -> &'static str {
        match self {
            _ if self.is_timeout() => "timeout",
            Self::Request { .. } | Self::Timeout { .. } => "request",
            Self::Status { .. } => "status",
            Self::Invalid { .. } => "invalid",
            Self::Redirect { .. } => "redirect",
        }
    }

    pub fn is_timeout(&self) -> bool {
        match self {
            Self::Timeout { .. } => true,
            Self::Request { error, .. } => error.is_timeout(),
            Self::Status { .. } | Self::Invalid { .. } | Self::Redirect { .. } => false,
        }
    }
}
