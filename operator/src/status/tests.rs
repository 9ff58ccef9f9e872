//! The status rules on hand-made observations.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use nixcache_crds::{NixCache, NixCacheStatus, CONDITION_DEGRADED, CONDITION_PROGRESSING, CONDITION_READY};
use serde_json::json;

use super::*;
use crate::blocker::Blocker;
use crate::fixtures::{self, NixCacheExt};

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap())
}

/// A Deployment of `generation` whose controller observed `observed`, with these counts.
fn deployment(generation: i64, observed: i64, total: i32, updated: i32, ready: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "demo", "namespace": "default", "generation": generation},
        "spec": {"replicas": 3, "selector": {}, "template": {}},
        "status": {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
                   "readyReplicas": ready, "availableReplicas": ready},
    }))
    .unwrap()
}

fn seen_with(d: Deployment) -> Observation {
    Observation {
        migration: Some(Migration::Succeeded("demo-migrate-1".into())),
        deployment: DeploymentSeen::Present(Box::new(d)),
        complete: true,
        ..Observation::default()
    }
}

/// `nc` with the status computed for `seen` (as the next reconciliation gets it).
fn after(nc: &NixCache, seen: &Observation) -> NixCache {
    let mut next = nc.clone();
    next.status = Some(status(nc, seen, &now()));
    next
}

fn condition(status: &NixCacheStatus, type_: &str) -> (String, String, String) {
    let c = status.condition(type_).unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// `demo` serving 3 of 3 replicas of generation 1.
fn serving() -> NixCache {
    after(&fixtures::scaled("demo"), &seen_with(deployment(1, 1, 3, 3, 3)))
}

#[test]
fn ready_needs_a_ready_replica_on_the_current_template() {
    let nc = serving();
    assert_eq!(condition(nc.status.as_ref().unwrap(), CONDITION_READY).0, "True");
    // A new generation the Deployment controller has not taken up yet (an image change, or
    // only a scale): nothing is known of the template yet, so Ready stays as it was, no flap.
    let s = status(&nc, &seen_with(deployment(2, 1, 3, 3, 3)), &now());
    assert_eq!(
        condition(&s, CONDITION_READY).0,
        "True",
        "a scale must not flap Ready"
    );
    // Not ready before: still not ready.
    let mut unready = nc.clone();
    unready.status = Some(status(
        &fixtures::scaled("demo"),
        &seen_with(deployment(1, 1, 3, 0, 0)),
        &now(),
    ));
    let s = status(&unready, &seen_with(deployment(2, 1, 3, 3, 3)), &now());
    let (ready, reason, message) = condition(&s, CONDITION_READY);
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "RollingOut"),
        "{message}"
    );
    assert_eq!(
        (s.replicas, s.ready_replicas),
        (3, 3),
        "every replica still counts"
    );
    // One new replica surged, not ready: the three ready ones are all old.
    let s = status(&nc, &seen_with(deployment(2, 2, 4, 1, 3)), &now());
    let (ready, _, message) = condition(&s, CONDITION_READY);
    assert_eq!(ready, "False");
    assert!(message.contains("3 replicas of an earlier template"), "{message}");
    assert_eq!(condition(&s, CONDITION_PROGRESSING).1, "RollingOut");
    // The new replica is ready: 4 ready of which at most 3 are old.
    let s = status(&nc, &seen_with(deployment(2, 2, 4, 1, 4)), &now());
    assert_eq!(
        condition(&s, CONDITION_READY).0,
        "True",
        "a ready replica runs the new image"
    );
}

#[test]
fn ready_on_current_template_derives_the_count() {
    assert_eq!(ready::ready_on_current_template(&deployment(1, 1, 3, 3, 3)), 3);
    assert_eq!(ready::ready_on_current_template(&deployment(2, 2, 4, 1, 3)), 0);
    assert_eq!(ready::ready_on_current_template(&deployment(2, 2, 4, 2, 4)), 2);
    assert_eq!(ready::ready_on_current_template(&deployment(3, 2, 3, 3, 3)), 0);
    // The rollout is over once the old replicas are gone.
    assert_eq!(ready::ready_on_current_template(&deployment(2, 2, 3, 3, 2)), 2);
}

#[test]
fn a_failed_request_before_the_deployment_was_read_keeps_what_was_known() {
    let nc = serving();
    let seen = Observation {
        failure: Some(Blocker::new(
            "KubeServerError",
            "read Secret default/pg: 500 …".into(),
        )),
        ..Observation::default()
    };
    let s = status(&nc.clone().with_generation(2), &seen, &now());
    assert_eq!((s.replicas, s.ready_replicas), (3, 3));
    let before = nc.status.as_ref().unwrap().condition(CONDITION_READY).unwrap();
    let kept = s.condition(CONDITION_READY).unwrap();
    assert_eq!(kept.status, "True", "Ready=True stands");
    assert_eq!(
        (&kept.reason, &kept.message, &kept.last_transition_time),
        (&before.reason, &before.message, &before.last_transition_time)
    );
    assert_eq!(condition(&s, CONDITION_DEGRADED).1, "KubeServerError");
    assert_eq!(
        s.observed_generation,
        Some(1),
        "a failed request does not observe the spec"
    );
}

#[test]
fn a_blocked_spec_is_observed_but_its_children_are_not_applied() {
    let nc = serving();
    assert!(children_applied(nc.status.as_ref(), Some(1)));
    let blocked = nc.clone().with_generation(2);
    let seen = Observation {
        blocker: Some(Blocker::new("SecretNotFound", "Secret s3-new …".into())),
        ..Observation::default()
    };
    let s = status(&blocked, &seen, &now());
    assert_eq!(s.observed_generation, Some(2));
    assert_eq!(condition(&s, CONDITION_DEGRADED).1, "SecretNotFound");
    assert_eq!(
        condition(&s, CONDITION_READY).0,
        "True",
        "the replicas of the previous spec serve"
    );
    assert!(!children_applied(Some(&s), Some(2)));
    // Unblocked and applied: now the children of generation 2 are all there.
    let mut unblocked = blocked;
    unblocked.status = Some(s);
    let s = status(&unblocked, &seen_with(deployment(2, 2, 3, 3, 3)), &now());
    assert!(children_applied(Some(&s), Some(2)));
    assert!(!children_applied(Some(&s), Some(3)));
}

#[test]
fn a_migration_under_way_has_not_applied_the_children() {
    let nc = serving().with_generation(2);
    let seen = Observation {
        migration: Some(Migration::Running {
            job: "demo-migrate-2".into(),
            image: "registry.test/nixcache:2.0".into(),
        }),
        deployment: DeploymentSeen::Present(Box::new(deployment(1, 1, 3, 3, 3))),
        ..Observation::default()
    };
    let s = status(&nc, &seen, &now());
    assert_eq!(s.observed_generation, Some(1));
    assert_eq!(condition(&s, CONDITION_READY).0, "True");
    assert!(!children_applied(Some(&s), Some(1)) && !children_applied(Some(&s), Some(2)));
}

#[test]
fn condition_messages_are_bounded() {
    let seen = Observation {
        blocker: Some(Blocker::new("MigrationFailed", "é".repeat(20_000))),
        ..Observation::default()
    };
    let s = status(&fixtures::scaled("demo"), &seen, &now());
    for c in &s.conditions {
        assert!(
            c.message.len() <= CONDITION_MESSAGE_MAX_BYTES,
            "{}",
            c.message.len()
        );
        assert!(c.message.ends_with('…'));
    }
}

#[test]
fn a_warning_sets_degraded_only_and_the_generation_is_applied() {
    let nc = serving().with_generation(2);
    let warning = Blocker::new(
        "InvalidSpec",
        "spec.warm.schedule: the API server refused …".into(),
    );
    // Rolling out generation 2, with an invalid spec.warm.
    let mut seen = seen_with(deployment(2, 2, 4, 1, 3));
    seen.warning = Some(warning.clone());
    let s = status(&nc, &seen, &now());
    let (degraded, reason, message) = condition(&s, CONDITION_DEGRADED);
    assert_eq!((degraded.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert!(message.starts_with("spec.warm.schedule"), "{message}");
    let (progressing, reason, _) = condition(&s, CONDITION_PROGRESSING);
    assert_eq!((progressing.as_str(), reason.as_str()), ("True", "RollingOut"));
    assert_eq!(s.observed_generation, Some(2));
    assert!(children_applied(Some(&s), Some(2)), "not looked for again");
    // Behind a blocker, it is still shown.
    seen.blocker = Some(Blocker::new(
        "VolumeClaimNotUpdated",
        "the API server refused ….".into(),
    ));
    seen.complete = false;
    let s = status(&nc, &seen, &now());
    let (_, reason, message) = condition(&s, CONDITION_DEGRADED);
    assert_eq!(reason, "VolumeClaimNotUpdated");
    assert_eq!(
        message,
        "the API server refused …. Also: spec.warm.schedule: the API server refused …"
    );
}
