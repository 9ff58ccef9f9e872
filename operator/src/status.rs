//! The NixCache's status, computed from what the reconciler observed (pure).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use nixcache_crds::{NixCache, NixCacheStatus, CONDITION_DEGRADED, CONDITION_PROGRESSING, CONDITION_READY};

use crate::capabilities::{FeatureReport, CONDITION_FEATURES_AVAILABLE};
use crate::reconcile::Blocker;
use crate::render;

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

/// What one reconciliation saw.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    /// A problem the user must fix (invalid spec, missing Secret, failed migration, …).
    pub blocker: Option<Blocker>,
    /// The migration, when it got that far.
    pub migration: Option<Migration>,
    /// The Deployment as the API server returned it after the apply (or `None` if not applied).
    pub deployment: Option<Deployment>,
    /// The image the Deployment was applied with.
    pub image: Option<String>,
    /// The cache's public key.
    pub public_key: Option<String>,
    /// Every child the spec asks for was applied (so the status describes this generation).
    pub complete: bool,
    /// What the cluster's missing APIs mean for this spec (`None`: not looked at this time).
    pub features: Option<FeatureReport>,
}

/// The status for `nc` after `seen`; conditions keep their `lastTransitionTime` unless their
/// status changed.
pub fn status(nc: &NixCache, seen: &Observation, now: &Time) -> NixCacheStatus {
    let previous = nc.status.clone().unwrap_or_default();
    let (replicas, ready) = replica_counts(seen.deployment.as_ref());
    let generation = nc.metadata.generation;
    let mut conditions: Vec<Condition> = [
        ready_condition(nc, seen),
        progressing_condition(seen),
        degraded_condition(seen),
    ]
    .into_iter()
    .map(|(type_, status, reason, message)| {
        let old = previous.condition(type_);
        let since = match old {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => now.clone(),
        };
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason,
            message,
            observed_generation: generation,
            last_transition_time: since,
        }
    })
    .collect();
    conditions.extend(features_condition(&previous, seen, generation, now));
    let succeeded_job = match &seen.migration {
        Some(Migration::Succeeded(job)) => Some(job.clone()),
        _ => previous.migration_job.clone(),
    };
    NixCacheStatus {
        observed_generation: if seen.complete {
            generation
        } else {
            previous.observed_generation
        },
        conditions,
        replicas,
        ready_replicas: ready,
        selector: Some(render::selector_string(nc)),
        url: Some(render::service_url(nc)),
        public_key: seen.public_key.clone().or(previous.public_key),
        image: seen.image.clone().or(previous.image),
        migration_job: succeeded_job,
    }
}

type ConditionParts = (&'static str, &'static str, String, String);

/// `FeaturesAvailable` (see [`crate::capabilities`]): present while the spec asks for something
/// the cluster's API lacks; kept as it was when this reconciliation did not get that far.
fn features_condition(
    previous: &NixCacheStatus,
    seen: &Observation,
    generation: Option<i64>,
    now: &Time,
) -> Option<Condition> {
    let old = previous.condition(CONDITION_FEATURES_AVAILABLE);
    let Some(report) = &seen.features else {
        return old.cloned();
    };
    let (status, reason, message) = report.condition()?;
    let since = match old {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    Some(Condition {
        type_: CONDITION_FEATURES_AVAILABLE.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    })
}

fn replica_counts(deployment: Option<&Deployment>) -> (i32, i32) {
    let status = deployment.and_then(|d| d.status.as_ref());
    (
        status.and_then(|s| s.replicas).unwrap_or(0),
        status.and_then(|s| s.ready_replicas).unwrap_or(0),
    )
}

fn desired_replicas(nc: &NixCache, deployment: Option<&Deployment>) -> i32 {
    deployment
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.replicas)
        .unwrap_or(nc.spec.replicas)
}

fn ready_condition(nc: &NixCache, seen: &Observation) -> ConditionParts {
    let (_, ready) = replica_counts(seen.deployment.as_ref());
    let desired = desired_replicas(nc, seen.deployment.as_ref());
    let url = render::service_url(nc);
    if ready > 0 {
        let message = format!("{ready} of {desired} replicas ready; clients use substituters = {url}");
        return (CONDITION_READY, "True", "Available".into(), message);
    }
    if let Some(b) = &seen.blocker {
        return (CONDITION_READY, "False", b.reason.into(), b.message.clone());
    }
    let (reason, message) = match (&seen.migration, &seen.deployment) {
        (Some(Migration::Running { job, .. }), None) => (
            "Migrating",
            format!("waiting for the migration Job {job} before the first replica starts"),
        ),
        _ if desired == 0 => ("ScaledToZero", "spec.replicas is 0".to_owned()),
        _ => (
            "NoReadyReplicas",
            format!(
                "0 of {desired} replicas ready; see `kubectl -n {} describe pods -l {}`",
                nc.namespace().unwrap_or_default(),
                render::selector_string(nc)
            ),
        ),
    };
    (CONDITION_READY, "False", reason.into(), message)
}

fn progressing_condition(seen: &Observation) -> ConditionParts {
    if let Some(b) = &seen.blocker {
        return (CONDITION_PROGRESSING, "False", b.reason.into(), b.message.clone());
    }
    if let Some(Migration::Running { job, image }) = &seen.migration {
        let message = format!(
            "Job {job} runs `nixcache migrate` for {image}; the replicas move to it once it succeeds"
        );
        return (CONDITION_PROGRESSING, "True", "Migrating".into(), message);
    }
    match seen.deployment.as_ref().and_then(rollout_progress) {
        Some(message) => (CONDITION_PROGRESSING, "True", "RollingOut".into(), message),
        None => (
            CONDITION_PROGRESSING,
            "False",
            "UpToDate".into(),
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

fn degraded_condition(seen: &Observation) -> ConditionParts {
    if let Some(b) = &seen.blocker {
        return (CONDITION_DEGRADED, "True", b.reason.into(), b.message.clone());
    }
    let stuck = seen
        .deployment
        .as_ref()
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "Progressing" && c.status == "False")
        });
    if let Some(c) = stuck {
        let message = format!(
            "the rollout stopped progressing: {} (see `kubectl describe deployment {}`)",
            c.message.as_deref().unwrap_or("no message"),
            seen.deployment.as_ref().map(|d| d.name_any()).unwrap_or_default()
        );
        return (CONDITION_DEGRADED, "True", "RolloutStuck".into(), message);
    }
    (
        CONDITION_DEGRADED,
        "False",
        "AsExpected".into(),
        "no problems found".into(),
    )
}
