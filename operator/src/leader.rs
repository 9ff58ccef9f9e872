//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! exactly one reconciles. Same protocol as client-go's leaderelection: the holder renews
//! `renewTime` every `retry_period`; others take the Lease once `renewTime + leaseDurationSeconds`
//! has passed. Every write carries the read `resourceVersion`, so of two replicas racing for an
//! expired Lease only one wins (the other gets 409 Conflict).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::Client;

use crate::error::api_code;
use crate::{Error, Result};

/// Lease settings (flags of the operator binary).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Name of the Lease.
    pub name: String,
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down (less than `lease_duration`).
    pub renew_deadline: Duration,
    /// Pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

/// What to do with a Lease as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it.
    Take,
    /// Another replica holds it and renewed recently.
    Wait,
}

/// Decides from the Lease's holder and renew time, at `now`.
pub fn decide(spec: &LeaseSpec, identity: &str, now: Timestamp) -> Decision {
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Take;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    match &spec.renew_time {
        Some(MicroTime(renewed)) if *renewed + duration > now => Decision::Wait,
        _ => Decision::Take,
    }
}

/// Acquires, holds and releases the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaderElector {
    /// An elector for `config.name` in `config.namespace`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    fn lease_name(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    /// One attempt: `true` when this replica holds the Lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Timestamp::now();
        let name = &self.config.name;
        let Some(mut lease) = self.api.get_opt(name).await.map_err(|e| self.error("read", e))? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.held_spec(now, now, 0)),
            };
            return self.write(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        lease.spec = Some(match decide(&spec, &self.config.identity, now) {
            Decision::Wait => return Ok(false),
            Decision::Renew => {
                let acquired = spec.acquire_time.map_or(now, |t| t.0);
                self.held_spec(acquired, now, spec.lease_transitions.unwrap_or(0))
            }
            Decision::Take => self.held_spec(now, now, spec.lease_transitions.unwrap_or(0) + 1),
        });
        // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
        self.write(self.api.replace(name, &PostParams::default(), &lease).await)
    }

    fn held_spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_duration.as_secs().try_into().unwrap_or(15)),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    fn write(&self, result: kube::Result<Lease>) -> Result<bool> {
        match result {
            Ok(_) => Ok(true),
            Err(e) if api_code(&e) == Some(409) => Ok(false),
            Err(e) => Err(self.error("write", e)),
        }
    }

    fn error(&self, verb: &str, e: kube::Error) -> Error {
        Error::kube(format!("{verb} Lease {}", self.lease_name()), e)
    }

    /// Waits until this replica holds the Lease (errors are logged and retried).
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.lease_name(), identity = %self.config.identity, "became leader");
                    return;
                }
                Ok(false) => tracing::debug!(lease = %self.lease_name(), "another replica leads; waiting"),
                Err(error) => tracing::warn!(%error, "leader election attempt failed"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews the Lease every retry period; returns when it was lost (taken by another replica,
    /// or not renewed within the renew deadline).
    pub async fn hold(&self) -> Error {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    return Error::LostLeadership(format!("{} (taken by another replica)", self.lease_name()))
                }
                Err(error) => tracing::warn!(%error, "cannot renew the leader lease"),
            }
            if last_renewal.elapsed() > self.config.renew_deadline {
                return Error::LostLeadership(format!(
                    "{} (not renewed within the deadline)",
                    self.lease_name()
                ));
            }
        }
    }

    /// Gives the Lease up (on shutdown), so that another replica takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.lease_name(), "released the leader lease"),
            Err(error) => tracing::warn!(%error, "cannot release the leader lease"),
        }
    }
}
