//! A scripted Kubernetes API server for the reconciler tests: an in-memory object store behind
//! `tower_test`'s mock service, answering GET, POST (create), PATCH (server-side apply, also
//! of `/status`), PUT (replace, with resourceVersion checks) and DELETE the way the API server
//! does for the fields the operator reads, and recording every request in order.
//!
//! For the controller it also serves API discovery (`GET /apis/<group>/<version>`), lists of a
//! collection synthesized from the stored objects, and watches that stay open until the test
//! sends an event ([`FakeApi::notify`]). Tests can make the "cluster" lack an API
//! ([`FakeApi::unserve`]), refuse a resource ([`FakeApi::fail`], e.g. 403 for a missing RBAC
//! grant) or never answer ([`FakeApi::hang`]).
//!
//! Server-side apply here: the applied object replaces everything but `status`, the server's
//! metadata (uid, creationTimestamp, resourceVersion, generation, managedFields) and the fields
//! other managers own. `managedFields` holds each manager's field set in the `FieldsV1` format,
//! with lists and scalars as leaves (the API server also tracks list elements): a field another
//! manager owns is kept when an apply leaves it out, and an apply that changes it conflicts
//! (409) unless forced, which takes it over. Fields nobody owns are dropped (the API server keeps
//! them; the operator's children have none). The applying manager's entry time moves only when
//! something changed, `generation` only when the spec did. A Job's `spec.template` is immutable
//! (422). An apply of `/status` keeps the top-level status fields other managers applied (the
//! reconciler's and the status poller's). A JSON merge patch honours a `metadata.resourceVersion` precondition. GET of a
//! namespaced collection with a `labelSelector` lists (equality selectors only).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

mod fields;
mod list;
pub mod world;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{json, Value};

mod cluster;
mod status;

use cluster::{json_response, Held};
use fields::{field_set, managed_entry, remove_field};

/// One request as the operator sent it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Option<Value>,
}

impl Recorded {
    /// `METHOD path`, e.g. `PATCH /apis/apps/v1/namespaces/default/deployments/demo`.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The `fieldManager` query parameter.
    pub fn field_manager(&self) -> Option<String> {
        self.query
            .split('&')
            .find_map(|kv| kv.strip_prefix("fieldManager="))
            .map(str::to_owned)
    }

    pub fn forced(&self) -> bool {
        self.query.split('&').any(|kv| kv == "force=true")
    }

    /// A server-side apply (rather than a JSON merge or strategic merge patch).
    pub fn is_apply(&self) -> bool {
        self.method == "PATCH"
            && self
                .content_type
                .as_deref()
                .is_some_and(|t| t.starts_with("application/apply-patch"))
    }

    /// The decoded value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .map(list::percent_decode)
    }
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    log: Vec<Recorded>,
    clock: i64,
    resource_version: u64,
    /// `(group/version, resource)` the cluster does not serve.
    unserved: BTreeSet<(String, String)>,
    /// Resource → the status code every request for it gets.
    failing: BTreeMap<String, u16>,
    /// Path prefixes whose requests are never answered.
    hanging: Vec<String>,
    held: Vec<Held>,
    /// Requests (line, query) that asked for metadata only (`Accept: …;as=PartialObjectMetadata…`).
    metadata_only: BTreeSet<(String, String)>,
    faults: Vec<Fault>,
    /// Writes the "API server" refuses, by object path: (code, reason, message).
    refusals: BTreeMap<String, (u16, String, String)>,
    /// Server-side applies of `/status`: (object path, field manager) → the status keys it owns.
    status_owners: status::Owners,
}

/// A failure the server answers instead of handling matching requests (see
/// [`FakeApi::fail_requests`]).
struct Fault {
    method: String,
    path_prefix: String,
    code: u16,
    reason: String,
    message: String,
}

/// Handle on the fake API server's store and request log.
#[derive(Clone, Default)]
pub struct FakeApi(Arc<Mutex<State>>);

/// A client talking to a new fake API server.
pub fn start() -> (kube::Client, FakeApi) {
    let api = FakeApi::default();
    (client_for(&api), api)
}

/// Another client on the same store (each client has its own mock connection).
pub fn client_for(api: &FakeApi) -> kube::Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = api.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let body: Option<Value> = (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).unwrap());
            let content_type = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let recorded = Recorded {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or("").to_owned(),
                content_type,
                body,
            };
            let accept = parts
                .headers
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let mut state = server.0.lock().unwrap();
            if accept.is_some_and(|a| a.contains("as=PartialObjectMetadata")) {
                state
                    .metadata_only
                    .insert((recorded.line(), recorded.query.clone()));
            }
            state.log.push(recorded.clone());
            let hangs = state
                .hanging
                .iter()
                .any(|p| recorded.path.starts_with(p.as_str()));
            let unserved = server.unserved(&state, &recorded);
            if (recorded.is_watch() || hangs)
                && unserved.is_none()
                && server.failure(&state, &recorded).is_none()
            {
                state.held.push(Held {
                    request: recorded,
                    send,
                });
                continue;
            }
            drop(state);
            let (status, reply) = unserved.unwrap_or_else(|| server.handle(&recorded));
            send.send_response(json_response(status, &reply));
        }
    });
    kube::Client::new(service, "default")
}

fn status_reply(code: u16, reason: &str, message: &str) -> (StatusCode, Value) {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": if code < 300 { "Success" } else { "Failure" },
        "message": message, "reason": reason, "code": code,
    });
    (StatusCode::from_u16(code).unwrap(), body)
}

fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// Everything of an object but its status and the server-set metadata.
fn content(object: &Value) -> Value {
    let mut c = object.clone();
    if let Some(o) = c.as_object_mut() {
        o.remove("status");
    }
    if let Some(meta) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "uid",
            "creationTimestamp",
            "resourceVersion",
            "generation",
            "managedFields",
        ] {
            meta.remove(k);
        }
    }
    c
}

impl FakeApi {
    fn now(state: &mut State) -> String {
        state.clock += 1;
        let t = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + state.clock).unwrap();
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    fn handle(&self, r: &Recorded) -> (StatusCode, Value) {
        let mut state = self.0.lock().unwrap();
        if let Some(reply) = self.failure(&state, r) {
            return reply;
        }
        let fault = state
            .faults
            .iter()
            .find(|f| f.method == r.method && r.path.starts_with(&f.path_prefix));
        if let Some(f) = fault {
            return status_reply(f.code, &f.reason, &f.message);
        }
        if let Some((code, reason, message)) = state.refusals.get(&r.path).filter(|_| r.method != "GET") {
            return status_reply(*code, reason, message);
        }
        match r.method.as_str() {
            "GET" => match state.objects.get(&r.path) {
                Some(o) => (StatusCode::OK, o.clone()),
                None if list::is_namespaced_collection(&r.path) && r.param("labelSelector").is_some() => {
                    let selector = r.param("labelSelector").unwrap_or_default();
                    (StatusCode::OK, list::select(&state.objects, &r.path, &selector))
                }
                None => self
                    .discovery(&state, &r.path)
                    .or_else(|| self.list(&state, &r.path))
                    .unwrap_or_else(|| status_reply(404, "NotFound", &format!("{} not found", r.path))),
            },
            "POST" => {
                let mut object = r.body.clone().unwrap();
                let name = object["metadata"]["name"].as_str().unwrap().to_owned();
                let key = format!("{}/{name}", r.path);
                if state.objects.contains_key(&key) {
                    return status_reply(409, "AlreadyExists", &format!("{key} already exists"));
                }
                Self::stamp_new(&mut state, &mut object, None);
                state.objects.insert(key, object.clone());
                (StatusCode::CREATED, object)
            }
            "PATCH" if r.path.ends_with("/status") => {
                let key = r.path.trim_end_matches("/status").to_owned();
                let applied = r.body.as_ref().unwrap()["status"].clone();
                state.resource_version += 1;
                let rv = state.resource_version.to_string();
                let manager = r.field_manager().unwrap_or_default();
                let State {
                    objects,
                    status_owners,
                    ..
                } = &mut *state;
                match objects.get_mut(&key) {
                    Some(o) => {
                        o["status"] = status::apply(status_owners, &key, &manager, &o["status"], &applied);
                        o["metadata"]["resourceVersion"] = rv.into();
                        (StatusCode::OK, o.clone())
                    }
                    None => status_reply(404, "NotFound", "no such object"),
                }
            }
            "PATCH" if !r.is_apply() => {
                // A JSON merge patch (the event recorder updating an event series).
                state.resource_version += 1;
                let rv = state.resource_version.to_string();
                let Some(stored) = state.objects.get_mut(&r.path) else {
                    return status_reply(404, "NotFound", "no such object");
                };
                let patch = r.body.as_ref().unwrap();
                let precondition = &patch["metadata"]["resourceVersion"];
                if !precondition.is_null() && *precondition != stored["metadata"]["resourceVersion"] {
                    return status_reply(409, "Conflict", "the object has been modified");
                }
                merge(stored, patch);
                stored["metadata"]["resourceVersion"] = rv.into();
                (StatusCode::OK, stored.clone())
            }
            "PATCH" => self.apply(&mut state, r),
            "PUT" => {
                let object = r.body.clone().unwrap();
                let Some(stored) = state.objects.get(&r.path).cloned() else {
                    return status_reply(404, "NotFound", "no such object");
                };
                if object["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"] {
                    return status_reply(409, "Conflict", "the object has been modified");
                }
                state.resource_version += 1;
                let mut object = object;
                object["metadata"]["resourceVersion"] = state.resource_version.to_string().into();
                state.objects.insert(r.path.clone(), object.clone());
                (StatusCode::OK, object)
            }
            "DELETE" => match state.objects.remove(&r.path) {
                Some(_) => status_reply(200, "", "deleted"),
                None => status_reply(404, "NotFound", "no such object"),
            },
            other => panic!("unexpected method {other}"),
        }
    }

    fn stamp_new(state: &mut State, object: &mut Value, manager: Option<&str>) {
        let now = Self::now(state);
        state.resource_version += 1;
        let fields = field_set(object);
        let meta = &mut object["metadata"];
        meta["uid"] = format!("uid-{}", state.resource_version).into();
        meta["creationTimestamp"] = now.clone().into();
        meta["resourceVersion"] = state.resource_version.to_string().into();
        meta["generation"] = 1.into();
        if let Some(manager) = manager {
            meta["managedFields"] = json!([managed_entry(manager, "Apply", &now, fields)]);
        }
    }

    fn apply(&self, state: &mut State, r: &Recorded) -> (StatusCode, Value) {
        let manager = r.field_manager().unwrap_or_else(|| {
            panic!(
                "server-side apply needs a fieldManager: {} ?{}",
                r.line(),
                r.query
            )
        });
        let applied = r.body.clone().unwrap();
        let Some(stored) = state.objects.get(&r.path).cloned() else {
            let mut object = applied;
            Self::stamp_new(state, &mut object, Some(&manager));
            state.objects.insert(r.path.clone(), object.clone());
            return (StatusCode::CREATED, object);
        };
        let merged = fields::merge_apply(&stored, &applied, &manager);
        if !merged.conflicts.is_empty() && !r.forced() {
            let message = format!(
                "Apply failed with {} conflicts: {}",
                merged.conflicts.len(),
                merged.conflicts.join(", ")
            );
            return status_reply(409, "Conflict", &message);
        }
        let (mut object, mut others) = (merged.object, merged.others);
        if r.path.contains("/jobs/") && object["spec"]["template"] != stored["spec"]["template"] {
            let name = stored["metadata"]["name"].as_str().unwrap_or_default();
            let message = format!(
                "Job.batch \"{name}\" is invalid: spec.template: Invalid value: ...: field is immutable"
            );
            return status_reply(422, "Invalid", &message);
        }
        if content(&object) == content(&stored) && merged.fields_unchanged {
            return (StatusCode::OK, stored);
        }
        let now = Self::now(state);
        state.resource_version += 1;
        let spec_changed = object.get("spec") != stored.get("spec");
        let generation = stored["metadata"]["generation"].as_i64().unwrap_or(1) + i64::from(spec_changed);
        for k in ["uid", "creationTimestamp"] {
            object["metadata"][k] = stored["metadata"][k].clone();
        }
        object["metadata"]["resourceVersion"] = state.resource_version.to_string().into();
        object["metadata"]["generation"] = generation.into();
        others.push(managed_entry(&manager, "Apply", &now, field_set(&applied)));
        object["metadata"]["managedFields"] = Value::Array(others);
        if let Some(status) = stored.get("status") {
            object["status"] = status.clone();
        }
        state.objects.insert(r.path.clone(), object.clone());
        (StatusCode::OK, object)
    }

    // ---- what the tests do to the "cluster" between reconciliations ----

    /// Stores `object` at `path` as if a user had created it.
    pub fn insert(&self, path: &str, mut object: Value) {
        let mut state = self.0.lock().unwrap();
        Self::stamp_new(&mut state, &mut object, None);
        state.objects.insert(path.to_owned(), object);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.0.lock().unwrap().objects.get(path).cloned()
    }

    pub fn remove(&self, path: &str) -> Option<Value> {
        self.0.lock().unwrap().objects.remove(path)
    }

    /// Sets the status of the stored object (what a Job or Deployment controller would do).
    pub fn set_status(&self, path: &str, status: Value) {
        let mut state = self.0.lock().unwrap();
        let object = state
            .objects
            .get_mut(path)
            .unwrap_or_else(|| panic!("no object at {path}"));
        object["status"] = status;
    }

    /// Changes a stored object as a user's `kubectl edit` would (generation bumps for spec).
    pub fn edit(&self, path: &str, change: impl FnOnce(&mut Value)) {
        let mut state = self.0.lock().unwrap();
        let object = state.objects.get_mut(path).unwrap();
        let before = object.get("spec").cloned();
        change(object);
        if object.get("spec").cloned() != before {
            let g = object["metadata"]["generation"].as_i64().unwrap_or(1);
            object["metadata"]["generation"] = (g + 1).into();
        }
    }

    /// Makes every write (create, patch, replace, delete) of `path` fail with `code`, as the
    /// API server refuses a change it cannot make.
    pub fn refuse(&self, path: &str, code: u16, reason: &str, message: &str) {
        let refusal = (code, reason.to_owned(), message.to_owned());
        self.0.lock().unwrap().refusals.insert(path.to_owned(), refusal);
    }

    /// Undoes [`FakeApi::refuse`].
    pub fn allow(&self, path: &str) {
        self.0.lock().unwrap().refusals.remove(path);
    }

    /// Sets `spec.replicas` of the object at `path` as `manager` does through the scale
    /// subresource (an update: it takes the field over from every other manager).
    pub fn scale(&self, path: &str, replicas: i64, manager: &str) {
        let mut state = self.0.lock().unwrap();
        let now = Self::now(&mut state);
        state.resource_version += 1;
        let rv = state.resource_version.to_string();
        let object = state.objects.get_mut(path).unwrap();
        let field = vec!["spec".to_owned(), "replicas".to_owned()];
        let mut entries = object["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for entry in &mut entries {
            remove_field(&mut entry["fieldsV1"], &field);
        }
        entries.retain(|e| e["fieldsV1"].as_object().is_some_and(|f| !f.is_empty()));
        let mut update = managed_entry(manager, "Update", &now, json!({"f:spec": {"f:replicas": {}}}));
        update["subresource"] = "scale".into();
        entries.push(update);
        object["metadata"]["managedFields"] = Value::Array(entries);
        object["spec"]["replicas"] = replicas.into();
        let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
        object["metadata"]["generation"] = (generation + 1).into();
        object["metadata"]["resourceVersion"] = rv.into();
    }

    /// Paths of stored objects under `prefix`.
    pub fn paths(&self, prefix: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .objects
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// From now on, answers `METHOD` requests whose path starts with `path_prefix` with a
    /// failure Status (`code`, `reason`, `message`) instead of handling them.
    pub fn fail_requests(&self, method: &str, path_prefix: &str, code: u16, reason: &str, message: &str) {
        self.0.lock().unwrap().faults.push(Fault {
            method: method.into(),
            path_prefix: path_prefix.into(),
            code,
            reason: reason.into(),
            message: message.into(),
        });
    }

    /// Handles every request again (forgets [`FakeApi::fail_requests`]).
    pub fn heal_requests(&self) {
        self.0.lock().unwrap().faults.clear();
    }

    /// The requests since the last call.
    pub fn take_log(&self) -> Vec<Recorded> {
        std::mem::take(&mut self.0.lock().unwrap().log)
    }
}

/// Path of the `demo` Deployment in `default`, as the controller tests create it.
pub const DEMO_DEPLOYMENT: &str = "/apis/apps/v1/namespaces/default/deployments/demo";

/// Waits (virtual time under a paused clock) until `done`, at most `limit`; false if it never was.
pub async fn wait_for(limit: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if done() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    done()
}

/// The image of the `demo` Deployment's first container, once it exists.
pub fn demo_image(api: &FakeApi) -> Option<String> {
    let d = api.get(DEMO_DEPLOYMENT)?;
    d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .map(str::to_owned)
}

/// A context on `api` for the process and leader tests (no event reporter instance).
pub fn context(api: &FakeApi) -> Arc<nixcache_operator::Context> {
    let config = nixcache_operator::Config::new("registry.test/nixcache:1.0");
    Arc::new(nixcache_operator::Context::new(
        client_for(api),
        config,
        Arc::default(),
        None,
    ))
}

/// Lease settings of replica `identity`: client-go's defaults (15 s, 10 s, 2 s), in `ops`.
pub fn lease_config(identity: &str) -> nixcache_operator::leader::LeaseConfig {
    nixcache_operator::leader::LeaseConfig {
        name: "nixcache-operator".into(),
        namespace: "ops".into(),
        identity: identity.into(),
        lease_duration: std::time::Duration::from_secs(15),
        renew_deadline: std::time::Duration::from_secs(10),
        retry_period: std::time::Duration::from_secs(2),
    }
}
