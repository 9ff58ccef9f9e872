//! [`Blocker`]: a problem the user has to fix, found by the reconciler and shown in the status.

/// A problem the user has to fix; written to the status (`Degraded`), not retried as an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    /// Condition reason, e.g. `SecretNotFound`.
    pub reason: &'static str,
    /// What is wrong and what to do, naming the field or object.
    pub message: String,
}

impl Blocker {
    /// A blocker with `reason` and `message`.
    pub fn new(reason: &'static str, message: String) -> Self {
        Self { reason, message }
    }
}
