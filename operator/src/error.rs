//! The operator's error type.

use std::time::Duration;

use crate::text;

/// Why a reconciliation (or the operator) failed. Problems a user can fix in the NixCache or its
/// Secrets are not errors: they are written to the status as conditions (see
/// [`crate::blocker::Blocker`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the Kubernetes API failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the operator was doing, e.g. `apply Deployment default/cache`.
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The random number generator failed while generating a signing key.
    #[error("cannot generate a signing key: {0}")]
    KeyGeneration(#[source] nixcache_protocol::KeyError),
    /// The NixCache has no namespace (it is a namespaced resource, so the API never sends one).
    #[error("NixCache {0} has no namespace")]
    MissingNamespace(String),
    /// A request (or a series of them) did not finish in time.
    #[error("{action}: no answer within {after:?}")]
    Timeout {
        /// What the operator was doing, e.g. `renew Lease ops/nixcache-operator`.
        action: String,
        /// The time it was given.
        after: Duration,
    },
    /// Another operator replica took the leader lease, or it could not be renewed in time.
    #[error("lost the leader lease {0}")]
    LostLeadership(String),
    /// The metrics and health server could not start.
    #[error("cannot serve metrics on {addr}: {source}")]
    AdminServer {
        /// The listen address.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Longest [`Error::summary`], in bytes.
pub const SUMMARY_MAX_BYTES: usize = 256;

/// Result with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a client error with what the operator was doing.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source,
        }
    }

    /// A fixed name of the variant (and, for API errors, of its class), for metric labels.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube { source, .. } => match api_code(source) {
                Some(409) => "KubeConflict",
                Some(403 | 401) => "KubeForbidden",
                Some(404) => "KubeNotFound",
                Some(422 | 400) => "KubeInvalid",
                Some(code) if code >= 500 => "KubeServerError",
                Some(_) => "KubeClientError",
                None => "KubeTransport",
            },
            Self::Timeout { .. } => "Timeout",
            Self::KeyGeneration(_) => "KeyGeneration",
            Self::MissingNamespace(_) => "MissingNamespace",
            Self::LostLeadership(_) => "LostLeadership",
            Self::AdminServer { .. } => "AdminServer",
        }
    }

    /// What failed, on one line of at most [`SUMMARY_MAX_BYTES`], for the status and events: for
    /// an API error the server's code, reason and message, not the client's debug dump of it.
    pub fn summary(&self) -> String {
        let text = match self {
            Self::Kube {
                action,
                source: kube::Error::Api(status),
            } => format!("{action}: {} {}: {}", status.code, status.reason, status.message),
            other => other.to_string(),
        };
        text::bounded(&text::one_line(&text), SUMMARY_MAX_BYTES)
    }

    /// First retry delay for this kind of error; it doubles with every further failure.
    pub fn base_backoff(&self) -> Duration {
        match self.metric_label() {
            "KubeConflict" => Duration::from_secs(1),
            "KubeServerError" | "KubeTransport" | "KubeNotFound" | "Timeout" => Duration::from_secs(5),
            // RBAC or a rejected object: a person has to act, so retry slowly.
            "KubeForbidden" | "KubeInvalid" | "KubeClientError" => Duration::from_secs(30),
            _ => Duration::from_secs(10),
        }
    }
}

/// The HTTP status of an API error response, if the server answered.
pub fn api_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_error_is_summarised_on_one_short_line_without_the_debug_dump() {
        let message = format!(
            "CronJob.batch \"demo-gc\" is invalid:\n{}",
            "spec.jobTemplate: Invalid value; ".repeat(400)
        );
        let status = kube::core::Status::failure(&message, "Invalid").with_code(422);
        let error = Error::kube("apply CronJob default/demo-gc", kube::Error::Api(status.boxed()));
        assert!(
            error.to_string().len() > 14_000,
            "the client's Display has the dump"
        );
        let summary = error.summary();
        assert!(summary.len() <= SUMMARY_MAX_BYTES, "{}", summary.len());
        assert!(
            summary.starts_with(
                "apply CronJob default/demo-gc: 422 Invalid: CronJob.batch \"demo-gc\" is invalid: spec."
            ),
            "{summary}"
        );
        assert!(!summary.contains('\n') && summary.ends_with('…'), "{summary}");
        assert!(!summary.contains("Status {"), "{summary}");
    }
}
