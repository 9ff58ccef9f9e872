//! The operator's error type.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

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

    /// The kind of this error: its variant and, for API errors, the class of the answer.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Kube { source, .. } => match api_code(source) {
                Some(409) => ErrorKind::KubeConflict,
                Some(403 | 401) => ErrorKind::KubeForbidden,
                Some(404) => ErrorKind::KubeNotFound,
                Some(422 | 400) => ErrorKind::KubeInvalid,
                Some(code) if code >= 500 => ErrorKind::KubeServerError,
                Some(_) => ErrorKind::KubeClientError,
                None => ErrorKind::KubeTransport,
            },
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::KeyGeneration(_) => ErrorKind::KeyGeneration,
            Self::MissingNamespace(_) => ErrorKind::MissingNamespace,
            Self::LostLeadership(_) => ErrorKind::LostLeadership,
            Self::AdminServer { .. } => ErrorKind::AdminServer,
        }
    }

    /// A fixed name of the variant (and, for API errors, of its class), for metric labels:
    /// [`ErrorKind::name`] of [`Error::kind`].
    pub fn metric_label(&self) -> &'static str {
        self.kind().name()
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
        self.kind().base_backoff()
    }
}

/// What kind of error an [`Error`] is: the failure metric's `error` label (rendered as
/// [`ErrorKind::name`]) and what decides the retry backoff.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ErrorKind {
    /// API answer 409.
    KubeConflict,
    /// API answer 401 or 403.
    KubeForbidden,
    /// API answer 404.
    KubeNotFound,
    /// API answer 400 or 422.
    KubeInvalid,
    /// API answer 5xx.
    KubeServerError,
    /// Any other API answer.
    KubeClientError,
    /// No answer from the API server (connection, TLS, decoding).
    KubeTransport,
    /// [`Error::Timeout`].
    Timeout,
    /// [`Error::KeyGeneration`].
    KeyGeneration,
    /// [`Error::MissingNamespace`].
    MissingNamespace,
    /// [`Error::LostLeadership`].
    LostLeadership,
    /// [`Error::AdminServer`].
    AdminServer,
}

impl ErrorKind {
    /// Every kind (for tests).
    #[cfg(test)]
    pub(crate) const ALL: [ErrorKind; 12] = [
        Self::KubeConflict,
        Self::KubeForbidden,
        Self::KubeNotFound,
        Self::KubeInvalid,
        Self::KubeServerError,
        Self::KubeClientError,
        Self::KubeTransport,
        Self::Timeout,
        Self::KeyGeneration,
        Self::MissingNamespace,
        Self::LostLeadership,
        Self::AdminServer,
    ];

    /// The variant's name (also its metric label value), e.g. `KubeConflict`.
    pub fn name(self) -> &'static str {
        match self {
            Self::KubeConflict => "KubeConflict",
            Self::KubeForbidden => "KubeForbidden",
            Self::KubeNotFound => "KubeNotFound",
            Self::KubeInvalid => "KubeInvalid",
            Self::KubeServerError => "KubeServerError",
            Self::KubeClientError => "KubeClientError",
            Self::KubeTransport => "KubeTransport",
            Self::Timeout => "Timeout",
            Self::KeyGeneration => "KeyGeneration",
            Self::MissingNamespace => "MissingNamespace",
            Self::LostLeadership => "LostLeadership",
            Self::AdminServer => "AdminServer",
        }
    }

    /// First retry delay for this kind of error; it doubles with every further failure.
    pub fn base_backoff(self) -> Duration {
        match self {
            Self::KubeConflict => Duration::from_secs(1),
            Self::KubeServerError | Self::KubeTransport | Self::KubeNotFound | Self::Timeout => {
                Duration::from_secs(5)
            }
            // RBAC or a rejected object: a person has to act, so retry slowly.
            Self::KubeForbidden | Self::KubeInvalid | Self::KubeClientError => Duration::from_secs(30),
            Self::KeyGeneration | Self::MissingNamespace | Self::LostLeadership | Self::AdminServer => {
                Duration::from_secs(10)
            }
        }
    }
}

/// The label value is [`ErrorKind::name`]: one list of names, not a derive beside it.
impl EncodeLabelValue for ErrorKind {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.name())
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

    fn api_error(code: u16) -> Error {
        let status = kube::core::Status::failure("refused", "Refused").with_code(code);
        Error::kube("apply Deployment default/demo", kube::Error::Api(status.boxed()))
    }

    #[test]
    fn api_errors_are_classified_by_their_code() {
        let cases = [
            (409, "KubeConflict", 1),
            (401, "KubeForbidden", 30),
            (403, "KubeForbidden", 30),
            (404, "KubeNotFound", 5),
            (400, "KubeInvalid", 30),
            (422, "KubeInvalid", 30),
            (500, "KubeServerError", 5),
            (503, "KubeServerError", 5),
            (429, "KubeClientError", 30),
        ];
        for (code, label, backoff_s) in cases {
            let error = api_error(code);
            assert_eq!(error.metric_label(), label, "{code}");
            assert_eq!(error.base_backoff(), Duration::from_secs(backoff_s), "{code}");
        }
    }

    #[test]
    fn other_errors_keep_their_labels_and_backoffs() {
        let timeout = Error::Timeout {
            action: "renew Lease ops/nixcache-operator".into(),
            after: Duration::from_secs(10),
        };
        let cases = [
            (timeout, "Timeout", 5),
            (Error::MissingNamespace("demo".into()), "MissingNamespace", 10),
            (
                Error::LostLeadership("ops/nixcache-operator".into()),
                "LostLeadership",
                10,
            ),
        ];
        for (error, label, backoff_s) in cases {
            assert_eq!(error.metric_label(), label);
            assert_eq!(error.base_backoff(), Duration::from_secs(backoff_s), "{label}");
        }
        let backoffs: Vec<u64> = ErrorKind::ALL
            .iter()
            .map(|k| k.base_backoff().as_secs())
            .collect();
        assert_eq!(backoffs, [1, 30, 5, 30, 5, 30, 5, 5, 10, 10, 10, 10]);
    }

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
