//! The NixCache's status, computed from what the reconciler observed (pure).
//!
//! - `observedGeneration` advances once the spec was seen through: every child applied, or
//!   stopped by a problem the user has to fix (a [`Blocker`]: invalid spec, missing Secret,
//!   failed migration), so GitOps tools show a blocked spec as failed rather than progressing.
//!   A failed API request (retried with a backoff) does not advance it.
//! - `replicas` and `readyReplicas` are the Deployment's; when the reconciliation stopped before
//!   reading it, the previous values stand, and so does a `Ready=True`.
//! - `Ready` is true when a ready replica runs the Deployment's current template
//!   ([`ready::condition`]).
//! - A warning (an invalid `spec.warm`) sets `Degraded` only: the generation is still applied,
//!   and `Progressing` and `Ready` follow the replicas.
//! - Condition messages are at most [`CONDITION_MESSAGE_MAX_BYTES`] long.

mod ready;
#[cfg(test)]
mod tests;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use nixcache_crds::{NixCache, NixCacheStatus, CONDITION_DEGRADED, CONDITION_PROGRESSING};

use crate::blocker::Blocker;
use crate::capabilities::{FeatureReport, CONDITION_FEATURES_AVAILABLE};
use crate::{render, text};

/// Longest condition message, in bytes (the API allows 32 KiB). Below the 1 KiB of an event's
/// note, so the event for a condition change (`Type=Status: message`) usually carries it whole.
pub const CONDITION_MESSAGE_MAX_BYTES: usize = 1000;

/// `Progressing` reason while the Deployment rolls out its current template.
pub const REASON_ROLLING_OUT: &str = "RollingOut";
/// `Progressing` reason when every replica runs the current template.
pub const REASON_UP_TO_DATE: &str = "UpToDate";

/// Where the migration for the current image and database stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Migration {
    /// SQLite: `serve` migrates itself.
    NotNeeded,
    /// The Job `job` runs `nixcache migrate` for `image`.
    Running {
        /// Name of the Job.
        job: String,
        /// The image it migrates for.
        image: String,
    },
    /// The Job `0` succeeded.
    Succeeded(String),
}

/// What a reconciliation knows of the Deployment.
#[derive(Clone, Debug, Default)]
pub enum DeploymentSeen {
    /// Not read: the reconciliation stopped before (or the read failed).
    #[default]
    NotRead,
    /// There is none (yet).
    Absent,
    /// As the API server returned it.
    Present(Box<Deployment>),
}

impl DeploymentSeen {
    /// The Deployment, if it was seen and exists.
    pub fn get(&self) -> Option<&Deployment> {
        match self {
            Self::Present(deployment) => Some(deployment.as_ref()),
            Self::NotRead | Self::Absent => None,
        }
    }
}

impl From<Option<Deployment>> for DeploymentSeen {
    fn from(read: Option<Deployment>) -> Self {
        read.map_or(Self::Absent, |d| Self::Present(Box::new(d)))
    }
}

/// What one reconciliation saw.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    /// A problem the user must fix (invalid spec, missing Secret, failed migration, …).
    pub blocker: Option<Blocker>,
    /// A problem the user should fix that holds nothing else back (an invalid `spec.warm`): it
    /// sets `Degraded` only, and the generation can still be complete.
    pub warning: Option<Blocker>,
    /// An API request that failed (the reconciliation is retried): reason and one-line summary.
    pub failure: Option<Blocker>,
    /// The migration, when it got that far.
    pub migration: Option<Migration>,
    /// The Deployment as read or applied.
    pub deployment: DeploymentSeen,
    /// The image the Deployment was applied with.
    pub image: Option<String>,
    /// The cache's public key.
    pub public_key: Option<String>,
    /// Every child the spec asks for was applied (so the status describes this generation).
    pub complete: bool,
    /// What the cluster's missing APIs mean for this spec (`None`: not looked at this time).
    pub features: Option<FeatureReport>,
}

impl Observation {
    /// The problem to report in the conditions, if any.
    pub fn problem(&self) -> Option<&Blocker> {
        self.failure.as_ref().or(self.blocker.as_ref())
    }

    /// The spec was seen through: applied, or stopped by a blocker (not by a failed request).
    fn generation_observed(&self) -> bool {
        self.failure.is_none() && (self.complete || self.blocker.is_some())
    }
}

/// Whether `status` says that every child of `generation` was applied, so that no child a
/// previous spec wanted can be left. `observedGeneration` alone does not say so, since a blocked
/// spec is observed too: then `Progressing` has the problem's reason (or `Migrating`), not
/// `RollingOut` or `UpToDate`.
pub fn children_applied(status: Option<&NixCacheStatus>, generation: Option<i64>) -> bool {
    status.is_some_and(|s| {
        s.observed_generation == generation
            && s.condition(CONDITION_PROGRESSING)
                .is_some_and(|c| c.reason == REASON_ROLLING_OUT || c.reason == REASON_UP_TO_DATE)
    })
}

/// The parts of a condition that [`status`] computes.
struct Parts {
    type_: &'static str,
    status: &'static str,
    reason: String,
    message: String,
}

impl Parts {
    fn new(type_: &'static str, status: &'static str, reason: impl Into<String>, message: String) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message,
        }
    }

    fn problem(type_: &'static str, status: &'static str, problem: &Blocker) -> Self {
        Self::new(type_, status, problem.reason, problem.message.clone())
    }
}

/// The status for `nc` after `seen`; conditions keep their `lastTransitionTime` unless their
/// status changed.
pub fn status(nc: &NixCache, seen: &Observation, now: &Time) -> NixCacheStatus {
    let previous = nc.status.clone().unwrap_or_default();
    let (replicas, ready_replicas) = match &seen.deployment {
        DeploymentSeen::NotRead => (previous.replicas, previous.ready_replicas),
        known => replica_counts(known.get()),
    };
    let generation = nc.metadata.generation;
    let mut conditions: Vec<Condition> = [
        ready::condition(nc, seen, &previous),
        progressing_condition(seen),
        degraded_condition(seen),
    ]
    .into_iter()
    .map(|parts| condition(parts, &previous, generation, now))
    .collect();
    conditions.extend(features_condition(&previous, seen, generation, now));
    let url = render::service_url(nc);
    let public_key = seen.public_key.clone().or(previous.public_key);
    let succeeded_job = match &seen.migration {
        Some(Migration::Succeeded(job)) => Some(job.clone()),
        _ => previous.migration_job.clone(),
    };
    NixCacheStatus {
        observed_generation: if seen.generation_observed() {
            generation
        } else {
            previous.observed_generation
        },
        conditions,
        replicas,
        ready_replicas,
        selector: Some(render::selector_string(nc)),
        nix_conf: public_key.as_deref().map(|key| nix_conf(&url, key)),
        url: Some(url),
        public_key,
        image: seen.image.clone().or(previous.image),
        migration_job: succeeded_job,
        // The status poller's (`crate::cache_status`), under its own field manager.
        cache: None,
    }
}

/// `status.nixConf`: the lines a client adds to its `nix.conf` to use the cache at `url`.
pub fn nix_conf(url: &str, public_key: &str) -> String {
    format!("substituters = {url}\ntrusted-public-keys = {public_key}")
}

fn condition(parts: Parts, previous: &NixCacheStatus, generation: Option<i64>, now: &Time) -> Condition {
    let since = match previous.condition(parts.type_) {
        Some(c) if c.status == parts.status => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    Condition {
        type_: parts.type_.to_owned(),
        status: parts.status.to_owned(),
        reason: parts.reason,
        message: text::bounded(&parts.message, CONDITION_MESSAGE_MAX_BYTES),
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// `FeaturesAvailable` (see [`crate::capabilities`]): present while the spec asks for something
/// the cluster's API lacks; kept as it was when this reconciliation did not get that far.
fn features_condition(
    previous: &NixCacheStatus,
    seen: &Observation,
    generation: Option<i64>,
    now: &Time,
) -> Option<Condition> {
    let Some(report) = &seen.features else {
        return previous.condition(CONDITION_FEATURES_AVAILABLE).cloned();
    };
    let (status, reason, message) = report.condition()?;
    let parts = Parts::new(CONDITION_FEATURES_AVAILABLE, status, reason, message);
    Some(condition(parts, previous, generation, now))
}

/// `(replicas, readyReplicas)` of the Deployment, counting every template.
fn replica_counts(deployment: Option<&Deployment>) -> (i32, i32) {
    let status = deployment.and_then(|d| d.status.as_ref());
    (
        status.and_then(|s| s.replicas).unwrap_or(0),
        status.and_then(|s| s.ready_replicas).unwrap_or(0),
    )
}

fn progressing_condition(seen: &Observation) -> Parts {
    if let Some(problem) = seen.problem() {
        return Parts::problem(CONDITION_PROGRESSING, "False", problem);
    }
    if let Some(Migration::Running { job, image }) = &seen.migration {
        let message = format!(
            "Job {job} runs `nixcache migrate` for {image}; the replicas move to it once it succeeds"
        );
        return Parts::new(CONDITION_PROGRESSING, "True", "Migrating", message);
    }
    match seen.deployment.get().and_then(rollout_progress) {
        Some(message) => Parts::new(CONDITION_PROGRESSING, "True", REASON_ROLLING_OUT, message),
        None => Parts::new(
            CONDITION_PROGRESSING,
            "False",
            REASON_UP_TO_DATE,
            "every replica runs the current spec".into(),
        ),
    }
}

/// `Some(what is left)` while the Deployment has not rolled out its current template.
fn rollout_progress(d: &Deployment) -> Option<String> {
    let generation = d.metadata.generation.unwrap_or(0);
    let status = d.status.clone().unwrap_or_default();
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation {
        return Some("the Deployment controller has not seen the new spec yet".into());
    }
    if updated < desired || total > updated || available < updated {
        return Some(format!(
            "{updated} of {desired} replicas updated, {available} available, {} old ones left",
            (total - updated).max(0)
        ));
    }
    None
}

/// `Degraded`: the problem, else a stuck rollout, else the warning; a warning behind one of the
/// others is added to its message, so fixing that one does not uncover it by surprise.
fn degraded_condition(seen: &Observation) -> Parts {
    let primary = seen
        .problem()
        .map(|problem| Parts::problem(CONDITION_DEGRADED, "True", problem))
        .or_else(|| stuck_rollout(seen));
    match (primary, &seen.warning) {
        (Some(mut parts), Some(warning)) => {
            let first = parts.message.trim_end_matches('.');
            parts.message = format!("{first}. Also: {}", warning.message);
            parts
        }
        (Some(parts), None) => parts,
        (None, Some(warning)) => Parts::problem(CONDITION_DEGRADED, "True", warning),
        (None, None) => Parts::new(
            CONDITION_DEGRADED,
            "False",
            "AsExpected",
            "no problems found".into(),
        ),
    }
}

/// `Degraded=True, RolloutStuck` when the Deployment controller gave up on the rollout.
fn stuck_rollout(seen: &Observation) -> Option<Parts> {
    let deployment = seen.deployment.get();
    let stuck = deployment
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "Progressing" && c.status == "False")
        })?;
    let message = format!(
        "the rollout stopped progressing: {} (see `kubectl describe deployment {}`)",
        stuck.message.as_deref().unwrap_or("no message"),
        deployment.map(|d| d.name_any()).unwrap_or_default()
    );
    Some(Parts::new(CONDITION_DEGRADED, "True", "RolloutStuck", message))
}
