//! The `Ready` condition: true when at least one ready replica runs the Deployment's current
//! template, so a spec whose new replicas never get ready does not show as ready while the old
//! ones serve.

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use nixcache_crds::{NixCache, NixCacheStatus, CONDITION_READY};

use super::{replica_counts, DeploymentSeen, Migration, Observation, Parts, REASON_ROLLING_OUT};
use crate::render;

/// `Ready` after `seen`; `previous` is the status before this reconciliation.
pub(super) fn condition(nc: &NixCache, seen: &Observation, previous: &NixCacheStatus) -> Parts {
    let deployment = match &seen.deployment {
        DeploymentSeen::NotRead => {
            // Nothing new is known about the replicas: a Ready=True stands (the problem that
            // stopped this reconciliation is in Degraded).
            if let Some(c) = previous.condition(CONDITION_READY).filter(|c| c.status == "True") {
                return Parts::new(CONDITION_READY, "True", c.reason.clone(), c.message.clone());
            }
            None
        }
        known => known.get(),
    };
    let desired = desired_replicas(nc, deployment);
    let (_, ready) = replica_counts(deployment);
    if let Some(d) = deployment {
        if ready_on_current_template(d) > 0 {
            let url = render::service_url(nc);
            let message = format!("{ready} of {desired} replicas ready; clients use substituters = {url}");
            return Parts::new(CONDITION_READY, "True", "Available", message);
        }
        // The Deployment controller has not taken up the latest spec yet (a scale bumps the
        // generation too): nothing new is known of the template, so a Ready=True stands rather
        // than flapping on every scale; once it has, the count above decides.
        if ready > 0 && controller_lags(d) {
            if let Some(c) = previous.condition(CONDITION_READY).filter(|c| c.status == "True") {
                return Parts::new(CONDITION_READY, "True", c.reason.clone(), c.message.clone());
            }
        }
        if ready > 0 {
            return Parts::new(
                CONDITION_READY,
                "False",
                REASON_ROLLING_OUT,
                old_replicas_only(d, ready),
            );
        }
    }
    if let Some(problem) = seen.problem() {
        return Parts::problem(CONDITION_READY, "False", problem);
    }
    let (reason, message) = match (&seen.migration, deployment) {
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
    Parts::new(CONDITION_READY, "False", reason, message)
}

fn desired_replicas(nc: &NixCache, deployment: Option<&Deployment>) -> i32 {
    deployment
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.replicas)
        .unwrap_or(nc.spec.replicas)
}

/// Ready replicas that run the Deployment's current template, at least.
///
/// The Deployment's status has no such count. Of its `readyReplicas`, at most `replicas -
/// updatedReplicas` run an older template, so the rest run the current one: exact when the old
/// replicas are all ready (a rolling update) or gone, an underestimate otherwise. Before the
/// Deployment controller has observed the Deployment's latest generation, `updatedReplicas`
/// still counts the previous template, so nothing is known to run the current one: 0.
pub fn ready_on_current_template(d: &Deployment) -> i32 {
    let Some(status) = &d.status else {
        return 0;
    };
    if status.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
        return 0;
    }
    let total = status.replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let old = (total - updated).max(0);
    (status.ready_replicas.unwrap_or(0) - old).max(0)
}

/// True while the Deployment controller has not observed the Deployment's latest generation.
fn controller_lags(d: &Deployment) -> bool {
    let observed = d.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
    observed < d.metadata.generation.unwrap_or(0)
}

/// The message of a `Ready=False` while only replicas of an earlier template are ready.
fn old_replicas_only(d: &Deployment, ready: i32) -> String {
    let status = d.status.clone().unwrap_or_default();
    let name = d.name_any();
    if status.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
        return format!(
            "{ready} replicas of an earlier template are ready; the Deployment controller has not \
             taken up the latest spec of Deployment {name} yet"
        );
    }
    format!(
        "{ready} replicas of an earlier template are ready, none of the current one yet \
         ({} updated); see `kubectl -n {} rollout status deployment/{name}`",
        status.updated_replicas.unwrap_or(0),
        d.namespace().unwrap_or_default()
    )
}
