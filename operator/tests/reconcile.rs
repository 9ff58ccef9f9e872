//! The reconciler against the scripted API server (`common::FakeApi`): the exact requests for
//! create, a no-op re-reconcile, an image upgrade (Job before Deployment), a failed migration,
//! a child deleted by hand, and an existing signing Secret left untouched.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::{FakeApi, Recorded};
use nixcache_crds::{NixCache, NixCacheStatus};
use nixcache_operator::fixtures::{self, NixCacheExt};
use nixcache_operator::reconcile::reconcile;
use nixcache_operator::{Config, Context};
use nixcache_protocol::SigningKey;
use serde_json::{json, Value};

const NS: &str = "/api/v1/namespaces/default";
const APPS: &str = "/apis/apps/v1/namespaces/default";
const BATCH: &str = "/apis/batch/v1/namespaces/default";
const NC: &str = "/apis/nixcache.dev/v1alpha1/namespaces/default/nixcaches";
const EVENTS: &str = "POST /apis/events.k8s.io/v1/namespaces/default/events";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn secret(name: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> =
        data.iter().map(|(k, v)| ((*k).into(), b64(v).into())).collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"}, "data": data})
}

struct World {
    api: FakeApi,
    ctx: Arc<Context>,
}

impl World {
    fn new(nc: &NixCache) -> Self {
        let (client, api) = common::start();
        let config = Config::new("registry.test/nixcache:1.0");
        let ctx = Arc::new(Context::new(client, config, Arc::default(), Some("test".into())));
        api.insert(
            &format!("{NC}/{}", nc.metadata.name.clone().unwrap()),
            serde_json::to_value(nc).unwrap(),
        );
        Self { api, ctx }
    }

    fn with_cluster_secrets(self) -> Self {
        self.api.insert(
            &format!("{NS}/secrets/pg"),
            secret("pg", &[("url", "postgres://u:pw@db/nix")]),
        );
        self.api.insert(
            &format!("{NS}/secrets/s3"),
            secret(
                "s3",
                &[("AWS_ACCESS_KEY_ID", "id"), ("AWS_SECRET_ACCESS_KEY", "key")],
            ),
        );
        self
    }

    /// The NixCache as the controller would hand it over now (with the status we wrote).
    fn current(&self, name: &str) -> NixCache {
        serde_json::from_value(self.api.get(&format!("{NC}/{name}")).unwrap()).unwrap()
    }

    /// Reconciles `name` once and returns the requests it made.
    async fn reconcile(&self, name: &str) -> Vec<Recorded> {
        self.api.take_log();
        reconcile(Arc::new(self.current(name)), self.ctx.clone())
            .await
            .expect("reconcile succeeds");
        let log = self.api.take_log();
        // (The event recorder updates a repeated event's series with a merge patch.)
        for r in log
            .iter()
            .filter(|r| r.method == "PATCH" && !r.path.contains("/events/"))
        {
            assert_eq!(
                r.field_manager().as_deref(),
                Some("nixcache-operator"),
                "{}",
                r.line()
            );
            assert!(r.forced(), "server-side apply with force: {}", r.line());
        }
        log
    }

    fn status(&self, name: &str) -> NixCacheStatus {
        self.current(name).status.unwrap()
    }

    fn condition(&self, name: &str, type_: &str) -> (String, String, String) {
        let status = self.status(name);
        let c = status.condition(type_).unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    fn job_paths(&self) -> Vec<String> {
        self.api.paths(&format!("{BATCH}/jobs/"))
    }

    fn succeed_job(&self, path: &str) {
        let status = json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]});
        self.api.set_status(path, status);
    }

    fn deployment_ready(&self, name: &str, replicas: i32) {
        let path = format!("{APPS}/deployments/{name}");
        let generation = self.api.get(&path).unwrap()["metadata"]["generation"].clone();
        self.api.set_status(
            &path,
            json!({"observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
                   "updatedReplicas": replicas, "availableReplicas": replicas}),
        );
    }
}

/// The request lines; an event is one line whether it is new (POST) or a repeat within the
/// recorder's window (PATCH of the event's series).
fn lines(log: &[Recorded]) -> Vec<String> {
    log.iter()
        .map(|r| if is_event(r) { EVENTS.to_owned() } else { r.line() })
        .collect()
}

fn is_event(r: &Recorded) -> bool {
    r.path.starts_with("/apis/events.k8s.io/")
}

fn event_reasons(log: &[Recorded]) -> Vec<String> {
    log.iter()
        .filter(|r| is_event(r))
        .map(|r| r.body.as_ref().unwrap()["reason"].as_str().unwrap().to_owned())
        .collect()
}

fn body_of<'a>(log: &'a [Recorded], line: &str) -> &'a Value {
    log.iter()
        .find(|r| r.line() == line)
        .and_then(|r| r.body.as_ref())
        .unwrap_or_else(|| panic!("no {line}"))
}

fn container_image(deployment: &Value) -> &str {
    deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
}

/// Creates `demo` (PostgreSQL + S3, three replicas) up to Ready; returns the migration Job path.
async fn create_ready(world: &World) -> String {
    world.reconcile("demo").await;
    let job = world.job_paths().pop().unwrap();
    world.succeed_job(&job);
    world.reconcile("demo").await;
    world.deployment_ready("demo", 3);
    world.reconcile("demo").await;
    assert_eq!(world.condition("demo", "Ready").0, "True");
    job
}

#[tokio::test]
async fn create_runs_the_migration_before_the_deployment() {
    let world = World::new(&fixtures::scaled("demo")).with_cluster_secrets();
    let log = world.reconcile("demo").await;
    let job = world.job_paths().pop().expect("a migration Job");
    let job_name = job.rsplit('/').next().unwrap().to_owned();
    assert!(job_name.starts_with("demo-migrate-") && job_name.len() == "demo-migrate-".len() + 10);
    assert_eq!(
        lines(&log),
        vec![
            format!("GET {NS}/secrets/pg"),
            format!("GET {NS}/secrets/s3"),
            format!("GET {NS}/secrets/demo-signing-key"),
            format!("POST {NS}/secrets"),
            EVENTS.to_owned(),
            format!("PATCH {NS}/services/demo"),
            EVENTS.to_owned(),
            format!("GET {job}"),
            format!("PATCH {job}"),
            EVENTS.to_owned(),
            format!("GET {APPS}/deployments/demo"),
            format!("PATCH {NC}/demo/status"),
            EVENTS.to_owned(),
        ]
    );
    assert_eq!(
        event_reasons(&log),
        ["SigningKeyGenerated", "Created", "Created", "Migrating"]
    );
    // The key Secret holds a valid Nix key whose public half is in the status.
    let key = world.api.get(&format!("{NS}/secrets/demo-signing-key")).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key["data"]["secret-key"].as_str().unwrap())
        .unwrap();
    let key = SigningKey::parse(std::str::from_utf8(&raw).unwrap()).unwrap();
    assert_eq!(key.name(), "demo.default-1");
    assert_eq!(
        world.status("demo").public_key,
        Some(key.public_key().to_string())
    );
    assert_eq!(world.condition("demo", "Progressing").1, "Migrating");
    assert_eq!(world.condition("demo", "Ready").1, "Migrating");
    // The Job runs `migrate` with the database URL from the Secret, never inline.
    let job_body = body_of(&log, &format!("PATCH {job}"));
    let container = &job_body["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"], json!(["migrate"]));
    assert_eq!(container["image"], "registry.test/nixcache:1.0");
    let env = container["env"].as_array().unwrap();
    let url = env.iter().find(|e| e["name"] == "NIXCACHE_DATABASE_URL").unwrap();
    assert_eq!(
        url["valueFrom"]["secretKeyRef"],
        json!({"name": "pg", "key": "url", "optional": false})
    );
    assert!(
        !job_body.to_string().contains("postgres://"),
        "the URL is never inlined"
    );

    // The Job succeeds: now the Deployment, the GC CronJob, and the cleanup of unwanted children
    // (the fsck CronJob, autoscaler, disruption budget, warm-up CronJob).
    world.succeed_job(&job);
    let log = world.reconcile("demo").await;
    assert_eq!(
        lines(&log),
        vec![
            format!("GET {NS}/secrets/pg"),
            format!("GET {NS}/secrets/s3"),
            format!("GET {NS}/secrets/demo-signing-key"),
            format!("PATCH {NS}/services/demo"),
            format!("GET {job}"),
            format!("PATCH {job}"),
            format!("PATCH {APPS}/deployments/demo"),
            EVENTS.to_owned(),
            format!("PATCH {BATCH}/cronjobs/demo-gc"),
            EVENTS.to_owned(),
            format!("DELETE {BATCH}/cronjobs/demo-fsck"),
            "DELETE /apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/demo".to_owned(),
            "DELETE /apis/policy/v1/namespaces/default/poddisruptionbudgets/demo".to_owned(),
            // Last of the optional children: a problem with it holds back none of the others.
            format!("DELETE {BATCH}/cronjobs/demo-warm"),
            // A migration Job the status does not record yet succeeded: older ones are looked for.
            format!("GET {BATCH}/jobs"),
            format!("PATCH {NC}/demo/status"),
            EVENTS.to_owned(),
            EVENTS.to_owned(),
        ]
    );
    assert_eq!(
        event_reasons(&log),
        ["Created", "Created", "NoReadyReplicas", "RollingOut"]
    );
    let deployment = body_of(&log, &format!("PATCH {APPS}/deployments/demo"));
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(deployment["metadata"]["ownerReferences"][0]["kind"], "NixCache");
    assert_eq!(deployment["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(world.condition("demo", "Progressing").1, "RollingOut");
    assert_eq!(world.condition("demo", "Ready").1, "NoReadyReplicas");

    world.deployment_ready("demo", 3);
    world.reconcile("demo").await;
    let status = world.status("demo");
    assert_eq!(status.ready_replicas, 3);
    assert_eq!(status.replicas, 3);
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.url.as_deref(), Some("http://demo.default.svc:8501"));
    assert_eq!(status.migration_job.as_deref(), Some(job_name.as_str()));
    assert_eq!(
        status.selector.as_deref(),
        Some("app.kubernetes.io/component=proxy,app.kubernetes.io/instance=demo,app.kubernetes.io/name=nixcache")
    );
    assert_eq!(world.condition("demo", "Ready").0, "True");
    assert_eq!(
        world.condition("demo", "Degraded"),
        ("False".into(), "AsExpected".into(), "no problems found".into())
    );
}

#[tokio::test]
async fn a_second_reconcile_changes_nothing() {
    let world = World::new(&fixtures::scaled("demo")).with_cluster_secrets();
    let job = create_ready(&world).await;
    let before = world.api.get(&format!("{APPS}/deployments/demo")).unwrap();
    let log = world.reconcile("demo").await;
    assert_eq!(
        lines(&log),
        vec![
            format!("GET {NS}/secrets/pg"),
            format!("GET {NS}/secrets/s3"),
            format!("GET {NS}/secrets/demo-signing-key"),
            format!("PATCH {NS}/services/demo"),
            format!("GET {job}"),
            format!("PATCH {job}"),
            format!("PATCH {APPS}/deployments/demo"),
            format!("PATCH {BATCH}/cronjobs/demo-gc"),
        ],
        "no create, no delete, no status write, no event"
    );
    let after = world.api.get(&format!("{APPS}/deployments/demo")).unwrap();
    assert_eq!(
        before["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );
}

#[tokio::test]
async fn an_image_upgrade_migrates_before_the_deployment_moves() {
    let world = World::new(&fixtures::scaled("demo")).with_cluster_secrets();
    let old_job = create_ready(&world).await;
    world.api.edit(&format!("{NC}/demo"), |nc| {
        nc["spec"]["image"] = "registry.test/nixcache:2.0".into()
    });
    let log = world.reconcile("demo").await;
    let new_job = world
        .job_paths()
        .into_iter()
        .find(|p| *p != old_job)
        .expect("a new Job");
    assert_eq!(
        lines(&log),
        vec![
            format!("GET {NS}/secrets/pg"),
            format!("GET {NS}/secrets/s3"),
            format!("GET {NS}/secrets/demo-signing-key"),
            format!("PATCH {NS}/services/demo"),
            format!("GET {new_job}"),
            format!("PATCH {new_job}"),
            EVENTS.to_owned(),
            format!("GET {APPS}/deployments/demo"),
            format!("PATCH {NC}/demo/status"),
            EVENTS.to_owned(),
        ],
        "the Deployment is not touched while the new image's migration runs"
    );
    assert_eq!(
        body_of(&log, &format!("PATCH {new_job}"))["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.test/nixcache:2.0"
    );
    let deployment = world.api.get(&format!("{APPS}/deployments/demo")).unwrap();
    assert_eq!(container_image(&deployment), "registry.test/nixcache:1.0");
    assert_eq!(
        world.condition("demo", "Ready").0,
        "True",
        "the old replicas still serve"
    );
    assert_eq!(world.condition("demo", "Progressing").1, "Migrating");

    world.succeed_job(&new_job);
    let log = world.reconcile("demo").await;
    let order = lines(&log);
    let deploy_at = order
        .iter()
        .position(|l| *l == format!("PATCH {APPS}/deployments/demo"))
        .unwrap();
    let delete_at = order
        .iter()
        .position(|l| *l == format!("DELETE {old_job}"))
        .expect("old Job deleted");
    assert!(deploy_at < delete_at, "{order:#?}");
    assert_eq!(
        container_image(body_of(&log, &format!("PATCH {APPS}/deployments/demo"))),
        "registry.test/nixcache:2.0"
    );
    assert!(world.api.get(&old_job).is_none());
    assert_eq!(
        world.status("demo").image.as_deref(),
        Some("registry.test/nixcache:2.0")
    );
}

#[tokio::test]
async fn a_failed_migration_degrades_and_keeps_the_old_replicas() {
    let world = World::new(&fixtures::scaled("demo")).with_cluster_secrets();
    create_ready(&world).await;
    world.api.edit(&format!("{NC}/demo"), |nc| {
        nc["spec"]["image"] = "registry.test/nixcache:2.0".into()
    });
    world.reconcile("demo").await;
    let job = world
        .job_paths()
        .into_iter()
        .find(|p| world.api.get(p).unwrap()["status"].is_null())
        .unwrap();
    world.api.set_status(
        &job,
        json!({"failed": 4, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
               "message": "Job has reached the specified backoff limit"}]}),
    );
    let log = world.reconcile("demo").await;
    assert!(
        !lines(&log).contains(&format!("PATCH {APPS}/deployments/demo")),
        "{:#?}",
        lines(&log)
    );
    let (status, reason, message) = world.condition("demo", "Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "MigrationFailed"));
    let job_name = job.rsplit('/').next().unwrap();
    assert!(
        message.contains(job_name) && message.contains("BackoffLimitExceeded"),
        "{message}"
    );
    assert!(message.contains("kubectl -n default logs job/"), "{message}");
    let warning = log.iter().find(|r| is_event(r)).unwrap().body.clone().unwrap();
    assert_eq!(
        (warning["type"].as_str(), warning["reason"].as_str()),
        (Some("Warning"), Some("MigrationFailed"))
    );
    assert_eq!(
        world.condition("demo", "Ready").0,
        "True",
        "the previous image keeps serving"
    );
    let deployment = world.api.get(&format!("{APPS}/deployments/demo")).unwrap();
    assert_eq!(container_image(&deployment), "registry.test/nixcache:1.0");
}

#[tokio::test]
async fn a_child_deleted_by_hand_is_put_back() {
    let world = World::new(&fixtures::scaled("demo")).with_cluster_secrets();
    create_ready(&world).await;
    let path = format!("{APPS}/deployments/demo");
    let original = world.api.remove(&path).unwrap();
    world.api.remove(&format!("{NS}/services/demo")).unwrap();
    let log = world.reconcile("demo").await;
    let restored = world.api.get(&path).expect("the Deployment is back");
    assert_eq!(content_spec(&restored), content_spec(&original));
    assert_eq!(
        event_reasons(&log)[..2],
        ["Created".to_owned(), "Created".to_owned()]
    );
    let notes: Vec<&str> = log
        .iter()
        .filter(|r| is_event(r))
        .map(|r| r.body.as_ref().unwrap()["note"].as_str().unwrap())
        .collect();
    assert!(
        notes.contains(&"created Service demo") && notes.contains(&"created Deployment demo"),
        "{notes:?}"
    );
    // A child edited by hand is put back by the next apply of the same content.
    world.api.edit(&path, |d| d["spec"]["replicas"] = 1.into());
    world.reconcile("demo").await;
    assert_eq!(world.api.get(&path).unwrap()["spec"]["replicas"], 3);
}

fn content_spec(object: &Value) -> Value {
    object["spec"].clone()
}

#[tokio::test]
async fn an_existing_signing_secret_is_only_read() {
    let key = SigningKey::generate("cache.example.com-1").unwrap();
    let nc = fixtures::scaled("demo").with_signing_secret("own-key");
    let world = World::new(&nc).with_cluster_secrets();
    world.api.insert(
        &format!("{NS}/secrets/own-key"),
        secret("own-key", &[("secret-key", &key.to_secret_string())]),
    );
    let before = world.api.get(&format!("{NS}/secrets/own-key")).unwrap();
    let job = {
        world.reconcile("demo").await;
        world.job_paths().pop().unwrap()
    };
    world.succeed_job(&job);
    let log = world.reconcile("demo").await;
    let secret_requests: Vec<String> = lines(&log)
        .into_iter()
        .filter(|l| l.contains("/secrets"))
        .collect();
    assert_eq!(
        secret_requests,
        [
            format!("GET {NS}/secrets/pg"),
            format!("GET {NS}/secrets/s3"),
            format!("GET {NS}/secrets/own-key")
        ]
    );
    assert_eq!(
        world.api.get(&format!("{NS}/secrets/own-key")).unwrap(),
        before,
        "untouched"
    );
    assert!(
        world.api.get(&format!("{NS}/secrets/demo-signing-key")).is_none(),
        "nothing generated"
    );
    assert_eq!(
        world.status("demo").public_key,
        Some(key.public_key().to_string())
    );
    let deployment = body_of(&log, &format!("PATCH {APPS}/deployments/demo"));
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    let signing = volumes.iter().find(|v| v["name"] == "signing-key").unwrap();
    assert_eq!(signing["secret"]["secretName"], "own-key");
    assert_eq!(signing["secret"]["items"][0]["key"], "secret-key");
}
