//! What every reconciliation shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};
use kube::Client;

use crate::capabilities::Capabilities;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::Config;

/// Longest retry delay after repeated failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Client, event recorder, metrics and settings of the controller.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes events on NixCaches.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Operator-wide settings.
    pub config: Config,
    /// How the controller's watches fare (`/readyz`).
    pub health: Arc<Health>,
    /// The optional APIs the cluster serves (all until discovery says otherwise).
    capabilities: RwLock<Capabilities>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context for `client`; events are reported as `instance` (the pod name) of the operator.
    pub fn new(client: Client, config: Config, metrics: Arc<Metrics>, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: crate::render::MANAGER.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            config,
            health: Arc::default(),
            capabilities: RwLock::default(),
            failures: Mutex::default(),
        }
    }

    /// The optional APIs the cluster serves, as last discovered.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records what API discovery found.
    pub fn set_capabilities(&self, capabilities: Capabilities) {
        *self.capabilities.write().unwrap_or_else(|e| e.into_inner()) = capabilities;
    }

    /// Records a failure of `key` and returns the delay before the next try: `base` doubled for
    /// every consecutive failure, at most [`MAX_BACKOFF`].
    pub fn next_backoff(&self, key: &str, base: Duration) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        let factor = 2u32.saturating_pow(count.saturating_sub(1).min(16));
        base.saturating_mul(factor).min(MAX_BACKOFF)
    }

    /// Forgets the failures of `key` after a successful reconciliation.
    pub fn reset_backoff(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}
