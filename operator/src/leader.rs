//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! exactly one reconciles. Same protocol as client-go's leaderelection:
//!
//! - The holder renews the Lease every `retry_period`.
//! - Another replica takes it only once the Lease record (holder, times, transitions) has not
//!   changed for `leaseDurationSeconds` *by its own monotonic clock*, counted from when it first
//!   saw that record. The timestamps in the Lease come from the other replica's clock and are
//!   never compared with ours: a replica whose clock runs ahead would otherwise take a healthy
//!   leader's Lease at once.
//! - Every attempt (a GET and a write) is bounded by a timeout: the retry period, and for the
//!   leader never past its renew deadline (last successful renewal + `renew_deadline`). So a
//!   renewal that hangs cannot keep an old leader reconciling: it steps down at the deadline,
//!   which is before any standby can have waited out the lease duration.
//! - Every write carries the read `resourceVersion`, so of two replicas racing for an expired
//!   Lease only one wins (the other gets 409 Conflict).

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::time::Instant;

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
    /// Pause between attempts to acquire or renew; also the timeout of one attempt.
    pub retry_period: Duration,
}

/// What to do with a Lease as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it.
    Take,
    /// Another replica holds it and its record changed less than a lease duration ago.
    Wait,
}

/// Decides from the Lease record `spec`, which has looked the same since `unchanged_since` (our
/// monotonic clock), at `now`. The Lease's own timestamps are not used: they are another
/// replica's clock.
pub fn decide(spec: &LeaseSpec, identity: &str, unchanged_since: Instant, now: Instant) -> Decision {
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Take;
    }
    let seconds = spec.lease_duration_seconds.unwrap_or(15).max(1);
    let duration = Duration::from_secs(u64::try_from(seconds).unwrap_or(15));
    if unchanged_since + duration > now {
        Decision::Wait
    } else {
        Decision::Take
    }
}

/// The last Lease record seen, and since when (our clock) it has looked like that.
struct Observed {
    spec: LeaseSpec,
    since: Instant,
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Attempt {
    /// This replica holds the Lease (created, renewed or taken).
    Held,
    /// Another replica holds it.
    HeldBy(String),
    /// Our write lost a race with another writer; read again.
    Conflict,
}

/// Acquires, holds and releases the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Mutex<Option<Observed>>,
    /// When the last successful acquire or renew was *sent* (the Lease is ours from then on
    /// for at least the lease duration, as any other replica counts).
    renewed_at: Mutex<Option<Instant>>,
}

impl LeaderElector {
    /// An elector for `config.name` in `config.namespace`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Mutex::new(None),
            renewed_at: Mutex::new(None),
        }
    }

    fn lease_name(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    /// One attempt, bounded by the retry period: `true` when this replica holds the Lease
    /// afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let limit = Instant::now() + self.config.retry_period;
        Ok(self.bounded_attempt(limit).await? == Attempt::Held)
    }

    async fn bounded_attempt(&self, limit: Instant) -> Result<Attempt> {
        let started = Instant::now();
        tokio::time::timeout_at(limit, self.attempt(started))
            .await
            .map_err(|_| Error::Timeout {
                action: format!("acquire or renew Lease {}", self.lease_name()),
                after: limit.saturating_duration_since(started),
            })?
    }

    async fn attempt(&self, started: Instant) -> Result<Attempt> {
        let now = Timestamp::now();
        let name = &self.config.name;
        let Some(mut lease) = self.api.get_opt(name).await.map_err(|e| self.error("read", e))? else {
            let spec = self.held_spec(now, now, 0);
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec.clone()),
            };
            let result = self.api.create(&PostParams::default(), &lease).await;
            return self.written(result, spec, started);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        // A record first seen now was written before the read answered: counting from the
        // answer (as client-go does), never from before the request, a standby waits at least a
        // lease duration after the holder's write, which the holder's renew deadline undercuts.
        let seen_at = Instant::now();
        let unchanged_since = self.observe(&spec, seen_at);
        let transitions = spec.lease_transitions.unwrap_or(0);
        let new = match decide(&spec, &self.config.identity, unchanged_since, seen_at) {
            Decision::Wait => return Ok(Attempt::HeldBy(spec.holder_identity.unwrap_or_default())),
            Decision::Renew => self.held_spec(spec.acquire_time.map_or(now, |t| t.0), now, transitions),
            Decision::Take => self.held_spec(now, now, transitions + 1),
        };
        lease.spec = Some(new.clone());
        // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
        let result = self.api.replace(name, &PostParams::default(), &lease).await;
        self.written(result, new, started)
    }

    /// Remembers `spec` as seen at `now` and returns since when it has looked the same.
    fn observe(&self, spec: &LeaseSpec, now: Instant) -> Instant {
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        match observed.as_ref() {
            Some(o) if o.spec == *spec => o.since,
            _ => {
                *observed = Some(Observed {
                    spec: spec.clone(),
                    since: now,
                });
                now
            }
        }
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

    fn written(&self, result: kube::Result<Lease>, spec: LeaseSpec, started: Instant) -> Result<Attempt> {
        match result {
            Ok(_) => {
                *self.observed.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(Observed { spec, since: started });
                *self.renewed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(started);
                Ok(Attempt::Held)
            }
            Err(e) if api_code(&e) == Some(409) => Ok(Attempt::Conflict),
            Err(e) => Err(self.error("write", e)),
        }
    }

    fn error(&self, verb: &str, e: kube::Error) -> Error {
        Error::kube(format!("{verb} Lease {}", self.lease_name()), e)
    }

    /// Waits until this replica holds the Lease (errors are logged and retried).
    pub async fn acquire(&self) {
        loop {
            let started = Instant::now();
            let next = started + self.config.retry_period;
            match self.bounded_attempt(next).await {
                Ok(Attempt::Held) => {
                    tracing::info!(lease = %self.lease_name(), identity = %self.config.identity, "became leader");
                    return;
                }
                Ok(Attempt::HeldBy(holder)) => {
                    tracing::debug!(lease = %self.lease_name(), %holder, "another replica leads; waiting")
                }
                Ok(Attempt::Conflict) => {
                    tracing::debug!(lease = %self.lease_name(), "lost a race for the Lease")
                }
                Err(error) => tracing::warn!(%error, "leader election attempt failed"),
            }
            tokio::time::sleep_until(next).await;
        }
    }

    /// Renews the Lease every retry period; returns when it is lost: held by another replica,
    /// or not renewed within the renew deadline (then at that deadline at the latest, however
    /// long a request hangs).
    pub async fn hold(&self) -> Error {
        let mut renewed = self
            .renewed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or_else(Instant::now);
        let mut next = renewed + self.config.retry_period;
        loop {
            let deadline = renewed + self.config.renew_deadline;
            tokio::time::sleep_until(next.min(deadline)).await;
            let started = Instant::now();
            if started >= deadline {
                return Error::LostLeadership(format!(
                    "{} (not renewed within the renew deadline of {:?})",
                    self.lease_name(),
                    self.config.renew_deadline
                ));
            }
            next = started + self.config.retry_period;
            match self.bounded_attempt(next.min(deadline)).await {
                Ok(Attempt::Held) => renewed = started,
                Ok(Attempt::HeldBy(holder)) => {
                    return Error::LostLeadership(format!("{} (taken by {holder})", self.lease_name()))
                }
                Ok(Attempt::Conflict) => {
                    tracing::warn!(lease = %self.lease_name(), "the Lease changed while renewing it; reading it again")
                }
                Err(error) => tracing::warn!(%error, "cannot renew the leader lease"),
            }
        }
    }

    /// Gives the Lease up (on shutdown), so that another replica takes over at once. Bounded
    /// by the retry period; a failure only delays the takeover by a lease duration.
    pub async fn release(&self) {
        let released = tokio::time::timeout(self.config.retry_period, self.give_up()).await;
        match released {
            Ok(Ok(true)) => tracing::info!(lease = %self.lease_name(), "released the leader lease"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot release the leader lease"),
            Err(_) => tracing::warn!(lease = %self.lease_name(), "releasing the leader lease timed out"),
        }
    }

    async fn give_up(&self) -> kube::Result<bool> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(false);
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(false);
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed)),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn the_other_replicas_timestamps_never_decide() {
        let seen = Instant::now();
        let wall = Timestamp::now();
        // The holder's clock 20 s behind ours, or 20 s ahead: a record that just changed is
        // fresh either way, and one unchanged for the lease duration is expired either way.
        for skew in [-20, 20] {
            let spec = held_by("a", wall + k8s_openapi::jiff::SignedDuration::from_secs(skew));
            assert_eq!(decide(&spec, "b", seen, seen), Decision::Wait, "skew {skew}");
            let almost = seen + Duration::from_millis(14_900);
            assert_eq!(decide(&spec, "b", seen, almost), Decision::Wait, "skew {skew}");
            let later = seen + Duration::from_secs(15);
            assert_eq!(decide(&spec, "b", seen, later), Decision::Take, "skew {skew}");
        }
    }

    #[test]
    fn own_and_free_leases() {
        let now = Instant::now();
        let spec = held_by("a", Timestamp::now());
        assert_eq!(decide(&spec, "a", now, now), Decision::Renew);
        let free = LeaseSpec::default();
        assert_eq!(decide(&free, "b", now, now), Decision::Take);
    }
}
