//! An honest status against the scripted API server (`common::FakeApi`): a failed request keeps
//! the replicas and says in one line what failed; event notes fit the API's limit; a blocked spec
//! is observed, and the children it no longer wants go once it is unblocked; `Ready` waits for a
//! replica of the current template.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::{FakeApi, Recorded};
use kube::runtime::events::EventType;
use nixcache_crds::{Autoscaling, NixCache, NixCacheStatus};
use nixcache_operator::fixtures;
use nixcache_operator::reconcile::events::{self, NOTE_MAX_BYTES};
use nixcache_operator::reconcile::reconcile;
use nixcache_operator::status::CONDITION_MESSAGE_MAX_BYTES;
use nixcache_operator::{Config, Context};
use serde_json::{json, Value};

const NS: &str = "/api/v1/namespaces/default";
const APPS: &str = "/apis/apps/v1/namespaces/default";
const NC: &str = "/apis/nixcache.dev/v1alpha1/namespaces/default/nixcaches";

fn secret(name: &str, data: &[(&str, &str)]) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let data: serde_json::Map<String, Value> =
        data.iter().map(|(k, v)| ((*k).into(), b64(v).into())).collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"}, "data": data})
}

fn s3_secret(name: &str) -> Value {
    secret(
        name,
        &[("AWS_ACCESS_KEY_ID", "id"), ("AWS_SECRET_ACCESS_KEY", "key")],
    )
}

struct World {
    api: FakeApi,
    ctx: Arc<Context>,
}

impl World {
    /// `nc` (named `demo`) with its Secrets `pg` and `s3`.
    fn new(nc: &NixCache) -> Self {
        let (client, api) = common::start();
        let config = Config::new("registry.test/nixcache:1.0");
        let ctx = Arc::new(Context::new(client, config, Arc::default(), Some("test".into())));
        api.insert(&format!("{NC}/demo"), serde_json::to_value(nc).unwrap());
        api.insert(
            &format!("{NS}/secrets/pg"),
            secret("pg", &[("url", "postgres://u:pw@db/nix")]),
        );
        api.insert(&format!("{NS}/secrets/s3"), s3_secret("s3"));
        Self { api, ctx }
    }

    fn current(&self) -> NixCache {
        serde_json::from_value(self.api.get(&format!("{NC}/demo")).unwrap()).unwrap()
    }

    /// Reconciles once; returns the requests and whether it succeeded.
    async fn reconcile(&self) -> (Vec<Recorded>, Result<(), String>) {
        self.api.take_log();
        let result = reconcile(Arc::new(self.current()), self.ctx.clone()).await;
        (self.api.take_log(), result.map(drop).map_err(|e| e.to_string()))
    }

    async fn reconcile_ok(&self) -> Vec<Recorded> {
        let (log, result) = self.reconcile().await;
        result.expect("reconcile succeeds");
        log
    }

    fn status(&self) -> NixCacheStatus {
        self.current().status.unwrap()
    }

    fn condition(&self, type_: &str) -> (String, String, String) {
        let status = self.status();
        let c = status.condition(type_).unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    fn edit_spec(&self, change: impl FnOnce(&mut Value)) {
        self.api.edit(&format!("{NC}/demo"), |nc| change(&mut nc["spec"]));
    }

    /// Sets the Deployment's status as its controller would, for its current generation.
    fn deployment_status(&self, total: i32, updated: i32, ready: i32) {
        let path = format!("{APPS}/deployments/demo");
        let generation = self.api.get(&path).unwrap()["metadata"]["generation"].clone();
        self.api.set_status(
            &path,
            json!({"observedGeneration": generation, "replicas": total, "updatedReplicas": updated,
                   "readyReplicas": ready, "availableReplicas": ready}),
        );
    }

    /// Runs the migration Job(s) to success and reconciles until the Deployment serves 3 of 3.
    async fn create_ready(&self) {
        self.reconcile_ok().await;
        self.succeed_jobs();
        self.reconcile_ok().await;
        self.deployment_status(3, 3, 3);
        self.reconcile_ok().await;
        assert_eq!(self.condition("Ready").0, "True");
    }

    fn succeed_jobs(&self) {
        for job in self.api.paths("/apis/batch/v1/namespaces/default/jobs/") {
            if self.api.get(&job).unwrap()["status"].is_null() {
                self.api.set_status(
                    &job,
                    json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}),
                );
            }
        }
    }
}

/// The notes of the events in `log`, as the API server would store them.
fn event_notes(log: &[Recorded]) -> Vec<(String, String)> {
    log.iter()
        .filter(|r| r.path.starts_with("/apis/events.k8s.io/"))
        .filter_map(|r| r.body.as_ref())
        .filter_map(|b| Some((b["reason"].as_str()?.to_owned(), b["note"].as_str()?.to_owned())))
        .collect()
}

#[tokio::test]
async fn a_failed_apply_keeps_the_replicas_and_says_in_one_line_what_failed() {
    let world = World::new(&fixtures::scaled("demo"));
    world.create_ready().await;
    world.edit_spec(|spec| spec["gc"]["schedule"] = "0 5 * * *".into());
    // What a real API server answers to a refused object can be long and span lines.
    let refusal = format!(
        "CronJob.batch \"demo-gc\" is invalid: [{}]",
        "spec.jobTemplate.spec.template.spec.containers[0].args: Invalid value: \"…\"\n".repeat(200)
    );
    world.api.fail_requests(
        "PATCH",
        "/apis/batch/v1/namespaces/default/cronjobs/",
        422,
        "Invalid",
        &refusal,
    );
    let (log, result) = world.reconcile().await;
    assert!(result.is_err(), "the error is returned, to be retried");

    let status = world.status();
    assert_eq!(
        (status.replicas, status.ready_replicas),
        (3, 3),
        "the replicas still serve"
    );
    assert_eq!(world.condition("Ready").0, "True");
    let (degraded, reason, message) = world.condition("Degraded");
    assert_eq!((degraded.as_str(), reason.as_str()), ("True", "KubeInvalid"));
    assert!(message.len() <= 330 && !message.contains('\n'), "{message}");
    assert!(
        message
            .starts_with("apply CronJob default/demo-gc: 422 Invalid: CronJob.batch \"demo-gc\" is invalid"),
        "{message}"
    );
    assert!(message.contains("retrying"), "{message}");
    assert_eq!(
        status.observed_generation,
        Some(1),
        "not observed: the apply failed, it is retried"
    );
    let notes = event_notes(&log);
    assert!(
        notes.iter().any(|(reason, _)| reason == "KubeInvalid"),
        "{notes:?}"
    );

    // Once the API server takes it, the failure is gone and generation 2 is observed.
    world.api.heal_requests();
    world.reconcile_ok().await;
    assert_eq!(world.condition("Degraded").0, "False");
    assert_eq!(world.status().observed_generation, Some(2));
}

#[tokio::test]
async fn a_failure_before_the_deployment_is_read_still_reports_the_replicas() {
    let world = World::new(&fixtures::scaled("demo"));
    world.create_ready().await;
    world.deployment_status(3, 3, 2);
    world.api.fail_requests(
        "GET",
        &format!("{NS}/secrets/pg"),
        500,
        "InternalError",
        "etcdserver: request timed out",
    );
    let (_, result) = world.reconcile().await;
    assert!(result.is_err());
    let status = world.status();
    assert_eq!(
        (status.replicas, status.ready_replicas),
        (3, 2),
        "read again for the status"
    );
    assert_eq!(world.condition("Ready").0, "True");
    let (_, reason, message) = world.condition("Degraded");
    assert_eq!(reason, "KubeServerError");
    assert!(
        message.starts_with("read Secret pg: 500 InternalError: etcdserver: request timed out"),
        "{message}"
    );

    // Nor can the Deployment be read: what was known stands.
    world.api.fail_requests(
        "GET",
        APPS,
        503,
        "ServiceUnavailable",
        "the server is shutting down",
    );
    let (_, result) = world.reconcile().await;
    assert!(result.is_err());
    let status = world.status();
    assert_eq!((status.replicas, status.ready_replicas), (3, 2));
    assert_eq!(world.condition("Ready").0, "True");
}

#[tokio::test]
async fn a_long_event_note_is_cut_to_the_api_limit() {
    let world = World::new(&fixtures::scaled("demo"));
    world.reconcile_ok().await;
    let job = world
        .api
        .paths("/apis/batch/v1/namespaces/default/jobs/")
        .pop()
        .unwrap();
    // A Job's failure message is the pods' to say: any length, any characters.
    let long = "échec de la migration; ".repeat(200);
    world.api.set_status(
        &job,
        json!({"failed": 4, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
               "message": long}]}),
    );
    let log = world.reconcile_ok().await;
    let notes = event_notes(&log);
    let (_, note) = notes
        .iter()
        .find(|(reason, _)| reason == "MigrationFailed")
        .unwrap_or_else(|| panic!("{notes:?}"));
    assert!(note.len() <= NOTE_MAX_BYTES, "{} bytes", note.len());
    assert!(
        note.starts_with("Degraded=True: migration Job demo-migrate-"),
        "{note}"
    );
    for (reason, note) in &notes {
        assert!(note.len() <= NOTE_MAX_BYTES, "{reason}: {} bytes", note.len());
    }
    let (_, reason, message) = world.condition("Degraded");
    assert_eq!(reason, "MigrationFailed");
    assert!(message.len() <= CONDITION_MESSAGE_MAX_BYTES, "{}", message.len());
    assert!(message.ends_with('…'), "{message}");
}

#[tokio::test]
async fn every_event_note_is_cut_where_events_are_published() {
    let world = World::new(&fixtures::scaled("demo"));
    let note = format!("{}é", "x".repeat(NOTE_MAX_BYTES - 1));
    let warning = EventType::Warning;
    events::publish(&world.ctx, &world.current(), warning, "Test", "Test", note).await;
    let notes = event_notes(&world.api.take_log());
    assert_eq!(notes.len(), 1, "published");
    let note = &notes[0].1;
    assert!(note.len() <= NOTE_MAX_BYTES, "{} bytes", note.len());
    assert_eq!(*note, format!("{}…", "x".repeat(NOTE_MAX_BYTES - 3)));
}

#[tokio::test]
async fn a_blocked_spec_is_observed_and_unwanted_children_go_once_it_is_unblocked() {
    let mut nc = fixtures::scaled("demo");
    nc.spec.autoscaling = Some(Autoscaling {
        min_replicas: 2,
        max_replicas: 5,
        target_cpu_utilization_percentage: None,
    });
    let world = World::new(&nc);
    world.create_ready().await;
    let autoscalers = || world.api.paths("/apis/autoscaling/");
    assert_eq!(autoscalers().len(), 1, "an autoscaler");

    // Generation 2 drops autoscaling and names a Secret that is not there yet.
    world.edit_spec(|spec| {
        spec.as_object_mut().unwrap().remove("autoscaling");
        spec["storage"]["s3"]["credentialsSecretRef"]["name"] = "s3-new".into();
    });
    world.reconcile_ok().await;
    let status = world.status();
    assert_eq!(
        status.observed_generation,
        Some(2),
        "seen, and blocked: GitOps tools show it failed"
    );
    assert_eq!(world.condition("Degraded").1, "SecretNotFound");
    assert_eq!((status.replicas, status.ready_replicas), (3, 3));
    assert_eq!(
        world.condition("Ready").0,
        "True",
        "the previous spec's replicas serve"
    );
    assert_eq!(
        autoscalers().len(),
        1,
        "nothing of generation 2 is applied while blocked"
    );

    // The Secret appears (the spec, and so its generation, stays): now generation 2 is applied.
    world
        .api
        .insert(&format!("{NS}/secrets/s3-new"), s3_secret("s3-new"));
    world.reconcile_ok().await;
    assert_eq!(world.condition("Degraded").0, "False");
    assert!(autoscalers().is_empty(), "{:?}", autoscalers());
}

#[tokio::test]
async fn an_image_rollout_is_ready_once_a_replica_of_the_new_template_is() {
    let world = World::new(&fixtures::scaled("demo"));
    world.create_ready().await;
    world.edit_spec(|spec| spec["image"] = "registry.test/nixcache:2.0".into());
    world.reconcile_ok().await;
    world.succeed_jobs();
    world.reconcile_ok().await;
    // The Deployment moved to the new template; its controller has not taken it up yet, so
    // nothing is known of the template: Ready stays (a scale bumps the generation too).
    assert_eq!(world.condition("Ready").0, "True");
    // A surge replica of the new template starts; the three ready ones are old.
    world.deployment_status(4, 1, 3);
    world.reconcile_ok().await;
    let (ready, _, message) = world.condition("Ready");
    assert_eq!(ready, "False", "{message}");
    assert_eq!(world.status().ready_replicas, 3);
    // It is ready.
    world.deployment_status(4, 1, 4);
    world.reconcile_ok().await;
    assert_eq!(world.condition("Ready").0, "True");
}
