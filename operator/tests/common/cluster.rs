//! What makes the fake API server a cluster for the controller: API discovery, lists
//! synthesized from the stored objects, watches held open until [`FakeApi::notify`], and the
//! test's controls over it (an API not served, a resource refused, requests that hang).

use http::{Response, StatusCode};
use kube::client::Body;
use serde_json::{json, Value};
use tower_test::mock::SendResponse;

use super::{status_reply, FakeApi, Recorded, State};

/// A request left unanswered: an open watch, or one the test made hang.
pub(super) struct Held {
    pub(super) request: Recorded,
    pub(super) send: SendResponse<Response<Body>>,
}

/// The APIs of the fake cluster and their resources (what discovery lists unless unserved).
const APIS: &[(&str, &[&str])] = &[
    ("apps/v1", &["deployments"]),
    ("batch/v1", &["jobs", "cronjobs"]),
    ("autoscaling/v2", &["horizontalpodautoscalers"]),
    ("policy/v1", &["poddisruptionbudgets"]),
    ("coordination.k8s.io/v1", &["leases"]),
    ("events.k8s.io/v1", &["events"]),
    ("nixcache.dev/v1alpha1", &["nixcaches", "nixcaches/status"]),
];

/// A request path taken apart: `/apis/G/V[/namespaces/NS]/RESOURCE[/NAME[/SUB]]`.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    group_version: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn target(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group_version, rest) = match segments.as_slice() {
        ["api", v, rest @ ..] => ((*v).to_owned(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (resource, rest) = rest.split_first()?;
    Some(Target {
        group_version,
        namespace,
        resource: (*resource).to_owned(),
        name: rest.first().map(|n| (*n).to_owned()),
        subresource: rest.get(1).map(|n| (*n).to_owned()),
    })
}

impl Recorded {
    pub(super) fn is_watch(&self) -> bool {
        self.method == "GET"
            && self
                .query
                .split('&')
                .any(|kv| kv == "watch=true" || kv == "watch=1")
    }
}

pub(super) fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

impl FakeApi {
    /// The 404 of an API or resource the cluster does not serve.
    pub(super) fn unserved(&self, state: &State, r: &Recorded) -> Option<(StatusCode, Value)> {
        let not_found = || {
            Some(status_reply(
                404,
                "NotFound",
                &format!("the server could not find {}", r.path),
            ))
        };
        let t = target(r.path.as_str())?;
        if state
            .unserved
            .contains(&(t.group_version.clone(), t.resource.clone()))
        {
            return not_found();
        }
        let served = APIS.iter().find(|(gv, _)| *gv == t.group_version)?;
        let all_unserved = served.1.iter().all(|res| {
            state
                .unserved
                .contains(&(t.group_version.clone(), (*res).to_owned()))
        });
        all_unserved.then(not_found).flatten()
    }

    /// The status the test set for every request of this resource.
    pub(super) fn failure(&self, state: &State, r: &Recorded) -> Option<(StatusCode, Value)> {
        let code = match state.failing.get(&r.path) {
            Some(code) => *code,
            None => *state.failing.get(&target(&r.path)?.resource)?,
        };
        let reason = if code == 403 { "Forbidden" } else { "Failure" };
        Some(status_reply(
            code,
            reason,
            &format!("{} {} refused", r.method, r.path),
        ))
    }

    /// `GET /apis/G/V`: the resources of a group-version the cluster serves.
    pub(super) fn discovery(&self, state: &State, path: &str) -> Option<(StatusCode, Value)> {
        let gv = path.strip_prefix("/apis/")?;
        if gv.matches('/').count() != 1 {
            return None;
        }
        let (_, resources) = APIS.iter().find(|(g, _)| *g == gv)?;
        let resources: Vec<Value> = resources
            .iter()
            .filter(|res| !state.unserved.contains(&(gv.to_owned(), (**res).to_owned())))
            .map(|res| json!({"name": res, "singularName": "", "namespaced": true, "kind": "", "verbs": ["get", "list", "watch"]}))
            .collect();
        if resources.is_empty() {
            return Some(status_reply(
                404,
                "NotFound",
                &format!("the server could not find {path}"),
            ));
        }
        Some((
            StatusCode::OK,
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
        ))
    }

    /// A list of the stored objects in the collection at `path` (all namespaces, or one).
    pub(super) fn list(&self, state: &State, path: &str) -> Option<(StatusCode, Value)> {
        let collection = target(path).filter(|t| t.name.is_none())?;
        let items: Vec<Value> = state
            .objects
            .iter()
            .filter(|(p, _)| {
                target(p).is_some_and(|t| {
                    t.group_version == collection.group_version
                        && t.resource == collection.resource
                        && t.name.is_some()
                        && t.subresource.is_none()
                        && (collection.namespace.is_none() || t.namespace == collection.namespace)
                })
            })
            .map(|(_, o)| o.clone())
            .collect();
        let rv = state.resource_version.to_string();
        Some((
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": rv}, "items": items}),
        ))
    }

    /// Makes the cluster lack `resource` of `group_version` (404 for discovery and requests).
    pub fn unserve(&self, group_version: &str, resource: &str) {
        let mut state = self.0.lock().unwrap();
        state
            .unserved
            .insert((group_version.to_owned(), resource.to_owned()));
    }

    /// Answers every request for `resource` (e.g. `cronjobs`), or to the exact path `resource`,
    /// with `code` (403: a missing grant).
    pub fn fail(&self, resource: &str, code: u16) {
        self.0.lock().unwrap().failing.insert(resource.to_owned(), code);
    }

    /// Requests under `prefix` are never answered (until [`FakeApi::answer_held`]).
    pub fn hang(&self, prefix: &str) {
        self.0.lock().unwrap().hanging.push(prefix.to_owned());
    }

    /// Stops hanging requests under `prefix` and answers the ones held so far.
    pub fn answer_held(&self, prefix: &str) {
        let held = {
            let mut state = self.0.lock().unwrap();
            state.hanging.retain(|p| p != prefix);
            let (answer, keep) = std::mem::take(&mut state.held)
                .into_iter()
                .partition(|h: &Held| !h.request.is_watch() && h.request.path.starts_with(prefix));
            state.held = keep;
            answer
        };
        for h in held {
            let (status, reply) = self.handle(&h.request);
            h.send.send_response(json_response(status, &reply));
        }
    }

    /// Sends `MODIFIED` with the object stored at `path` to the open watches of its collection
    /// (which then end, as watches do; the watcher opens the next one).
    pub fn notify(&self, path: &str) {
        let object = self.get(path).unwrap_or_else(|| panic!("no object at {path}"));
        let t = target(path).unwrap();
        let mut state = self.0.lock().unwrap();
        let (watching, keep) = std::mem::take(&mut state.held).into_iter().partition(|h: &Held| {
            h.request.is_watch()
                && target(&h.request.path).is_some_and(|w| {
                    w.group_version == t.group_version
                        && w.resource == t.resource
                        && (w.namespace.is_none() || w.namespace == t.namespace)
                })
        });
        state.held = keep;
        drop(state);
        let line = serde_json::to_vec(&json!({"type": "MODIFIED", "object": object})).unwrap();
        for h in watching {
            let response = Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Body::from([line.as_slice(), b"\n"].concat()))
                .unwrap();
            h.send.send_response(response);
        }
    }

    /// Requests for the resource again answered normally (after [`FakeApi::fail`]).
    pub fn heal(&self, resource: &str) {
        self.0.lock().unwrap().failing.remove(resource);
    }

    /// Whether request `r` asked for metadata only.
    pub fn asked_metadata_only(&self, r: &Recorded) -> bool {
        let key = (r.line(), r.query.clone());
        self.0.lock().unwrap().metadata_only.contains(&key)
    }

    /// The requests held now (open watches included).
    pub fn held(&self) -> Vec<String> {
        let state = self.0.lock().unwrap();
        state.held.iter().map(|h| h.request.line()).collect()
    }
}
