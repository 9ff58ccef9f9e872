//! One NixCache on the scripted API server, reconciled step by step, for the children tests
//! (migration Jobs, the replica handover, the signing key, the data claim).

use std::sync::Arc;

use base64::Engine as _;
use nixcache_crds::NixCache;
use nixcache_operator::reconcile::reconcile;
use nixcache_operator::{Config, Context};
use serde_json::{json, Value};

use super::{FakeApi, Recorded};

pub const NS: &str = "/api/v1/namespaces/default";
pub const APPS: &str = "/apis/apps/v1/namespaces/default";
pub const BATCH: &str = "/apis/batch/v1/namespaces/default";
pub const NC: &str = "/apis/nixcache.dev/v1alpha1/namespaces/default/nixcaches";

/// A Secret `name` in `default` with `data` (values base64-encoded here).
pub fn secret(name: &str, data: &[(&str, &str)]) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let data: serde_json::Map<String, Value> =
        data.iter().map(|(k, v)| ((*k).into(), b64(v).into())).collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"}, "data": data})
}

pub struct World {
    pub api: FakeApi,
    pub ctx: Arc<Context>,
    pub name: String,
}

impl World {
    /// `nc` stored, with the Secrets `pg` (a PostgreSQL URL) and `s3`.
    pub fn new(nc: &NixCache) -> Self {
        let (client, api) = super::start();
        let config = Config::new("registry.test/nixcache:1.0");
        let ctx = Arc::new(Context::new(client, config, Arc::default(), Some("test".into())));
        let name = nc.metadata.name.clone().unwrap();
        api.insert(&format!("{NC}/{name}"), serde_json::to_value(nc).unwrap());
        api.insert(
            &format!("{NS}/secrets/pg"),
            secret("pg", &[("url", "postgres://u:pw@db/nix")]),
        );
        api.insert(
            &format!("{NS}/secrets/s3"),
            secret(
                "s3",
                &[("AWS_ACCESS_KEY_ID", "id"), ("AWS_SECRET_ACCESS_KEY", "key")],
            ),
        );
        Self { api, ctx, name }
    }

    /// The NixCache as the controller would hand it over now (with the status we wrote).
    pub fn current(&self) -> NixCache {
        serde_json::from_value(self.api.get(&format!("{NC}/{}", self.name)).unwrap()).unwrap()
    }

    /// Reconciles once (it must succeed) and returns the requests it made, after checking that
    /// every server-side apply is the operator's and forced, but the handover's (never forced).
    pub async fn reconcile(&self) -> Vec<Recorded> {
        self.api.take_log();
        reconcile(Arc::new(self.current()), self.ctx.clone())
            .await
            .expect("reconcile succeeds");
        let log = self.api.take_log();
        for r in log.iter().filter(|r| r.is_apply()) {
            match r.field_manager().as_deref() {
                Some("nixcache-operator") => assert!(r.forced(), "forced: {}", r.line()),
                Some("nixcache-operator-handover") => assert!(!r.forced(), "not forced: {}", r.line()),
                other => panic!("field manager {other:?}: {}", r.line()),
            }
        }
        log
    }

    /// Changes the NixCache's stored object (a `kubectl edit`).
    pub fn edit(&self, change: impl FnOnce(&mut Value)) {
        self.api.edit(&format!("{NC}/{}", self.name), change);
    }

    pub fn condition(&self, type_: &str) -> (String, String, String) {
        let status = self.current().status.unwrap();
        let c = status.condition(type_).unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    pub fn job_paths(&self) -> Vec<String> {
        self.api.paths(&format!("{BATCH}/jobs/"))
    }

    /// The one migration Job without a status yet (just created).
    pub fn unfinished_job(&self) -> String {
        let mut unfinished: Vec<String> = self
            .job_paths()
            .into_iter()
            .filter(|p| self.api.get(p).unwrap()["status"].is_null())
            .collect();
        assert_eq!(unfinished.len(), 1, "{unfinished:?}");
        unfinished.pop().unwrap()
    }

    pub fn succeed_job(&self, path: &str) {
        let status = json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]});
        self.api.set_status(path, status);
    }

    pub fn fail_job(&self, path: &str) {
        let status = json!({"failed": 4, "conditions": [{"type": "Failed", "status": "True",
            "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]});
        self.api.set_status(path, status);
    }

    pub fn deployment_path(&self) -> String {
        format!("{APPS}/deployments/{}", self.name)
    }

    pub fn deployment_ready(&self, replicas: i64) {
        let path = self.deployment_path();
        let generation = self.api.get(&path).unwrap()["metadata"]["generation"].clone();
        self.api.set_status(
            &path,
            json!({"observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
                   "updatedReplicas": replicas, "availableReplicas": replicas}),
        );
    }

    /// Reconciles up to Ready: the first migration Job succeeded, the Deployment's `replicas`
    /// are ready. Returns the Job's path (none for SQLite).
    pub async fn create_ready(&self, replicas: i64) -> Option<String> {
        self.reconcile().await;
        let job = self.job_paths().pop();
        if let Some(job) = &job {
            self.succeed_job(job);
            self.reconcile().await;
        }
        self.deployment_ready(replicas);
        self.reconcile().await;
        assert_eq!(self.condition("Ready").0, "True");
        job
    }
}

/// The request lines, without events.
pub fn lines(log: &[Recorded]) -> Vec<String> {
    log.iter()
        .filter(|r| !r.path.starts_with("/apis/events.k8s.io/"))
        .map(Recorded::line)
        .collect()
}

/// The `Deleted` and `Created` event notes.
pub fn notes(log: &[Recorded]) -> Vec<String> {
    log.iter()
        .filter(|r| r.path.starts_with("/apis/events.k8s.io/") && r.method == "POST")
        .filter_map(|r| r.body.as_ref()?["note"].as_str().map(str::to_owned))
        .collect()
}

pub fn position(lines: &[String], line: &str) -> usize {
    lines
        .iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("no {line} in {lines:#?}"))
}
