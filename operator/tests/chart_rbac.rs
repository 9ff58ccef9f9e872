//! The chart's RBAC is exactly what the operator uses: the operator's own code (reconciler,
//! controller watches, event recorder, leader election, status poller) runs against the recording API server of
//! `common`, every request is turned into the RBAC check the API server would make
//! (namespace, API group, resource or subresource, verb, name), and then
//! - every such check is granted by the rules the chart binds to the operator's ServiceAccount
//!   (else the operator would be Forbidden in a real cluster), and
//! - every rule the chart grants is used by some request (least privilege: no verb or resource
//!   the operator never asks for),
//!
//! for the cluster-wide install (ClusterRole), with leader election (a Lease Role limited to the
//! Lease's name), and with `watchNamespace` (Roles only, no cluster-wide grant at all).
//!
//! What the API server checks beyond the plain verb, and so is derived here too: a server-side
//! apply may create the object (`create` besides `patch`), and an owner reference with
//! `blockOwnerDeletion` needs `update` on the owner's `finalizers` subresource.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "chart/tools.rs"]
mod tools;

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{FakeApi, Recorded};
use nixcache_crds::NixCache;
use nixcache_operator::controller::{self, Scope};
use nixcache_operator::fixtures;
use nixcache_operator::leader::{LeaderElector, LeaseConfig};
use nixcache_operator::reconcile::reconcile;
use nixcache_operator::{Config, Context};
use serde_json::{json, Value};

const NC: &str = "/apis/nixcache.dev/v1alpha1/namespaces/default/nixcaches";
const NS: &str = "/api/v1/namespaces/default";
const APPS: &str = "/apis/apps/v1/namespaces/default";
const BATCH: &str = "/apis/batch/v1/namespaces/default";

/// One authorization check: `verb` on `group`/`resource` (with `/subresource`) in `namespace`
/// (`None`: a cluster-wide request), on object `name` (`None`: collections and creates).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Check {
    namespace: Option<String>,
    group: String,
    resource: String,
    verb: String,
    name: Option<String>,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{} in {} (name {})",
            self.verb,
            if self.group.is_empty() {
                "core"
            } else {
                &self.group
            },
            self.resource,
            self.namespace.as_deref().unwrap_or("<cluster>"),
            self.name.as_deref().unwrap_or("-")
        )
    }
}

/// The checks the API server makes for `r`.
fn checks(r: &Recorded) -> Vec<Check> {
    let segments: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match segments[0] {
        "api" => ("", &segments[2..]),
        "apis" => (segments[1], &segments[3..]),
        other => panic!("unexpected path {other}: {}", r.line()),
    };
    let (namespace, rest) = if rest[0] == "namespaces" && rest.len() >= 3 {
        (Some(rest[1].to_owned()), &rest[2..])
    } else {
        (None, rest)
    };
    let name = rest.get(1).map(|n| (*n).to_owned());
    let resource = match rest.get(2) {
        Some(sub) => format!("{}/{sub}", rest[0]),
        None => rest[0].to_owned(),
    };
    let watch = r.query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (r.method.as_str(), &name) {
        ("GET", Some(_)) => "get",
        ("GET", None) if watch => "watch",
        ("GET", None) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", Some(_)) => "delete",
        ("DELETE", None) => "deletecollection",
        (m, _) => panic!("unexpected method {m}"),
    };
    let check = |resource: &str, verb: &str, name: Option<String>| Check {
        namespace: namespace.clone(),
        group: group.to_owned(),
        resource: resource.to_owned(),
        verb: verb.to_owned(),
        name,
    };
    let mut found = vec![check(
        &resource,
        verb,
        if verb == "create" { None } else { name.clone() },
    )];
    // A server-side apply of a missing object creates it; the API server then checks `create`.
    if verb == "patch" && r.field_manager().is_some() && !resource.contains('/') {
        found.push(check(&resource, "create", None));
    }
    // Owner references with blockOwnerDeletion: `update` of the owner's finalizers.
    let owners = r
        .body
        .as_ref()
        .and_then(|b| b["metadata"]["ownerReferences"].as_array().cloned())
        .unwrap_or_default();
    for owner in owners.iter().filter(|o| o["blockOwnerDeletion"] == true) {
        let api_version = owner["apiVersion"].as_str().unwrap();
        let owner_group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let plural = format!("{}s", owner["kind"].as_str().unwrap().to_lowercase());
        found.push(Check {
            namespace: namespace.clone(),
            group: owner_group.to_owned(),
            resource: format!("{plural}/finalizers"),
            verb: "update".to_owned(),
            name: owner["name"].as_str().map(str::to_owned),
        });
    }
    found
}

// ---------------------------------------------------------------- the operator's requests

fn secret(name: &str, data: &[(&str, &str)]) -> Value {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let data: serde_json::Map<String, Value> =
        data.iter().map(|(k, v)| ((*k).into(), b64(v).into())).collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"}, "data": data})
}

struct World {
    api: FakeApi,
    ctx: Arc<Context>,
    log: Vec<Recorded>,
}

impl World {
    fn new() -> Self {
        let (client, api) = common::start();
        let ctx = Arc::new(Context::new(
            client,
            Config::new("registry.test/nixcache:1.0"),
            Arc::default(),
            Some("test".into()),
        ));
        Self {
            api,
            ctx,
            log: Vec::new(),
        }
    }

    fn add(&self, nc: &NixCache) {
        let name = nc.metadata.name.clone().unwrap();
        self.api
            .insert(&format!("{NC}/{name}"), serde_json::to_value(nc).unwrap());
    }

    async fn reconcile(&mut self, name: &str) {
        let nc: NixCache = serde_json::from_value(self.api.get(&format!("{NC}/{name}")).unwrap()).unwrap();
        reconcile(Arc::new(nc), self.ctx.clone())
            .await
            .expect("reconcile succeeds");
        self.log.extend(self.api.take_log());
    }

    fn edit(&self, name: &str, change: impl FnOnce(&mut Value)) {
        self.api.edit(&format!("{NC}/{name}"), change);
    }

    fn unfinished_job(&self) -> String {
        self.api
            .paths(&format!("{BATCH}/jobs/"))
            .into_iter()
            .find(|p| self.api.get(p).unwrap()["status"].is_null())
            .expect("a migration Job")
    }

    fn succeed_job(&self, path: &str) {
        self.api.set_status(
            path,
            json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}),
        );
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

/// Drives the reconciler through every path that talks to the API server: create with a
/// generated key and a migration, Ready, an image upgrade (new Job, old one deleted), optional
/// children added (the replica count handed over to the autoscaler) and removed, a child deleted
/// by hand twice (a repeated event is patched), an existing signing Secret, a NixCache on a
/// volume (the claim), and a key Secret whose owner reference an earlier version set.
async fn reconciler_requests() -> Vec<Recorded> {
    let mut w = World::new();
    w.api.insert(
        &format!("{NS}/secrets/pg"),
        secret("pg", &[("url", "postgres://u:pw@db/nix")]),
    );
    w.api.insert(
        &format!("{NS}/secrets/s3"),
        secret(
            "s3",
            &[("AWS_ACCESS_KEY_ID", "id"), ("AWS_SECRET_ACCESS_KEY", "key")],
        ),
    );
    w.add(&fixtures::scaled("demo"));
    w.reconcile("demo").await;
    w.succeed_job(&w.unfinished_job());
    w.reconcile("demo").await;
    w.deployment_ready("demo", 3);
    w.reconcile("demo").await;

    w.edit("demo", |nc| {
        nc["spec"]["image"] = "registry.test/nixcache:2.0".into()
    });
    w.reconcile("demo").await;
    w.succeed_job(&w.unfinished_job());
    w.reconcile("demo").await;
    w.deployment_ready("demo", 3);
    w.reconcile("demo").await;

    w.edit("demo", |nc| {
        nc["spec"]["autoscaling"] = json!({"minReplicas": 3, "maxReplicas": 6});
        nc["spec"]["podDisruptionBudget"] = json!({"maxUnavailable": 1});
        nc["spec"]["warm"] = json!({"schedule": "30 4 * * *", "paths": [fixtures::HELLO]});
        nc["spec"]["fsck"] = json!({"schedule": "0 5 * * 0"});
    });
    w.reconcile("demo").await;
    w.edit("demo", |nc| {
        let spec = nc["spec"].as_object_mut().unwrap();
        for k in ["autoscaling", "podDisruptionBudget", "gc", "warm", "fsck"] {
            spec.remove(k);
        }
    });
    w.reconcile("demo").await;

    for _ in 0..2 {
        w.api.remove(&format!("{APPS}/deployments/demo")).unwrap();
        w.reconcile("demo").await;
    }

    let key = nixcache_protocol::SigningKey::generate("own-1").unwrap();
    w.api.insert(
        &format!("{NS}/secrets/own-key"),
        secret("own-key", &[("secret-key", &key.to_secret_string())]),
    );
    w.add(&fixtures::single("volume"));
    w.reconcile("volume").await;
    let mut own = fixtures::single("own");
    own.spec.signing = Some(nixcache_crds::Signing {
        key_name: None,
        secret_ref: Some(nixcache_crds::SecretKeyRef {
            name: "own-key".into(),
            key: None,
        }),
        ..nixcache_crds::Signing::default()
    });
    w.add(&own);
    w.reconcile("own").await;

    // A key generated by an earlier version, owned by its NixCache: the owner reference goes.
    w.add(&fixtures::single("legacy"));
    let uid = w.api.get(&format!("{NC}/legacy")).unwrap()["metadata"]["uid"].clone();
    let legacy = nixcache_protocol::SigningKey::generate("legacy-1").unwrap();
    let mut legacy_key = secret(
        "legacy-signing-key",
        &[("secret-key", &legacy.to_secret_string())],
    );
    legacy_key["metadata"]["ownerReferences"] = json!([{"apiVersion": "nixcache.dev/v1alpha1",
        "kind": "NixCache", "name": "legacy", "uid": uid, "controller": true}]);
    w.api
        .insert(&format!("{NS}/secrets/legacy-signing-key"), legacy_key);
    w.reconcile("legacy").await;
    w.log
}

/// The list and watch requests of the controller in `scope` (the fake API server lists what it
/// stores and keeps the watches open). API discovery (`GET /apis/G/V`, in `run`) is not here:
/// those are non-resource URLs every authenticated user may read (`system:discovery`).
async fn controller_requests(scope: Scope) -> Vec<Recorded> {
    let api = FakeApi::default();
    let run = |api: &FakeApi, scope: Scope, millis: u64| {
        let ctx = Arc::new(Context::new(
            common::client_for(api),
            Config::default(),
            Arc::default(),
            None,
        ));
        async move {
            // Dropped after `millis` (its graceful shutdown waits for the failing watches).
            let running = controller::run(ctx, scope, std::future::pending());
            let _ = tokio::time::timeout(Duration::from_millis(millis), running).await;
        }
    };
    run(&api, scope.clone(), 500).await;
    let lists: BTreeSet<String> = api
        .take_log()
        .into_iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.path)
        .collect();
    assert!(
        lists.len() >= 8,
        "the controller lists NixCaches, its six child kinds and Secrets: {lists:?}"
    );
    for path in &lists {
        api.insert(
            path,
            json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
        );
    }
    run(&api, scope, 1500).await;
    let log = api.take_log();
    for path in &lists {
        assert!(
            log.iter()
                .any(|r| &r.path == path && r.query.contains("watch=true")),
            "the controller watches {path} after listing it"
        );
    }
    log
}

/// One round of the status poller in `scope`: lists the NixCaches and the pods of `demo`, asks
/// its one ready pod (a mock replica on 127.0.0.1) and writes `status.cache`.
async fn poller_requests(scope: Scope) -> Vec<Recorded> {
    use nixcache_operator::cache_status::{Options, Poller};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = json!({"cache": {"size_bytes": 1}}).to_string();
    let router = axum::Router::new().route("/status", axum::routing::get(move || async move { body }));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let w = World::new();
    w.add(&fixtures::scaled("demo"));
    let labels = nixcache_operator::render::selector_labels(&fixtures::scaled("demo"));
    w.api.insert(
        &format!("{NS}/pods/demo-0"),
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "demo-0", "namespace": "default", "labels": labels},
               "spec": {"containers": [{"name": "nixcache", "ports": [{"name": "http", "containerPort": port}]}]},
               "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}}),
    );
    w.api.take_log();
    Poller::new(w.ctx.clone(), scope, Options::every(Duration::from_secs(60)))
        .round()
        .await;
    let log = w.api.take_log();
    for line in [format!("GET {NS}/pods"), format!("PATCH {NC}/demo/status")] {
        assert!(
            log.iter().any(|r| r.line() == line),
            "the poller never sent {line}"
        );
    }
    log
}

/// Acquires, renews and releases the Lease `name` in `namespace`.
async fn leader_election_requests(namespace: &str, name: &str) -> Vec<Recorded> {
    let (client, api) = common::start();
    let elector = LeaderElector::new(
        client,
        LeaseConfig {
            name: name.into(),
            namespace: namespace.into(),
            identity: "operator-0".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        },
    );
    assert!(
        elector.try_acquire_or_renew().await.unwrap(),
        "acquired (created)"
    );
    assert!(
        elector.try_acquire_or_renew().await.unwrap(),
        "renewed (replaced)"
    );
    elector.release().await;
    api.take_log()
}

// ---------------------------------------------------------------- the chart's grants

/// One granted (namespace or cluster-wide, group, resource, verb), with the names it is limited to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    namespace: Option<String>,
    group: String,
    resource: String,
    verb: String,
    names: Vec<String>,
}

impl Grant {
    fn allows(&self, c: &Check) -> bool {
        self.group == c.group
            && self.resource == c.resource
            && self.verb == c.verb
            && (self.namespace.is_none() || self.namespace == c.namespace)
            && (self.names.is_empty() || c.name.as_ref().is_some_and(|n| self.names.contains(n)))
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// What the chart grants the operator's ServiceAccount (the Deployment's).
fn grants(docs: &[Value]) -> Vec<Grant> {
    let deployment = tools::one(docs, "Deployment");
    let sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    let sa_ns = deployment["metadata"]["namespace"].as_str().unwrap();
    let mut found = Vec::new();
    for binding in docs
        .iter()
        .filter(|d| d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding")
    {
        let ours = binding["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == sa_ns);
        if !ours {
            continue;
        }
        let binding_ns = binding["metadata"]["namespace"].as_str().map(str::to_owned);
        let role_ref = &binding["roleRef"];
        let role = docs
            .iter()
            .find(|d| {
                d["kind"] == role_ref["kind"]
                    && d["metadata"]["name"] == role_ref["name"]
                    && (d["kind"] == "ClusterRole"
                        || d["metadata"]["namespace"].as_str() == binding_ns.as_deref())
            })
            .unwrap_or_else(|| {
                panic!(
                    "binding {} refers to a role the chart does not render",
                    binding["metadata"]["name"]
                )
            });
        let scope = if binding["kind"] == "ClusterRoleBinding" {
            None
        } else {
            binding_ns.clone()
        };
        for rule in role["rules"].as_array().unwrap() {
            let (groups, resources, verbs) = (
                strings(&rule["apiGroups"]),
                strings(&rule["resources"]),
                strings(&rule["verbs"]),
            );
            for s in groups.iter().chain(&resources).chain(&verbs) {
                assert_ne!(s, "*", "no wildcard in the operator's rules: {rule}");
            }
            assert!(
                rule.get("nonResourceURLs").is_none(),
                "the operator calls no non-resource URL"
            );
            for g in &groups {
                for r in &resources {
                    for v in &verbs {
                        found.push(Grant {
                            namespace: scope.clone(),
                            group: g.clone(),
                            resource: r.clone(),
                            verb: v.clone(),
                            names: strings(&rule["resourceNames"]),
                        });
                    }
                }
            }
        }
    }
    found
}

/// Both directions: every check granted, every grant used.
fn assert_exact(label: &str, grants: &[Grant], requests: &[Recorded]) {
    let mut denied = BTreeSet::new();
    let mut all = BTreeSet::new();
    for r in requests {
        for c in checks(r) {
            if !grants.iter().any(|g| g.allows(&c)) {
                denied.insert(format!("{c}   <- {}", r.line()));
            }
            all.insert(c);
        }
    }
    assert!(
        denied.is_empty(),
        "{label}: the chart does not grant what the operator does:\n{}",
        denied.into_iter().collect::<Vec<_>>().join("\n")
    );
    let unused: Vec<&Grant> = grants
        .iter()
        .filter(|g| !all.iter().any(|c| g.allows(c)))
        .collect();
    assert!(
        unused.is_empty(),
        "{label}: granted but never used by the operator: {unused:#?}"
    );
}

fn rbac_kinds(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .filter(|d| d["apiVersion"] == "rbac.authorization.k8s.io/v1")
        .map(|d| {
            format!(
                "{} {}{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["namespace"]
                    .as_str()
                    .map(|n| format!("{n}/"))
                    .unwrap_or_default(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn the_chart_grants_exactly_the_requests_the_operator_makes() {
    let Some(helm) = tools::helm() else { return };
    let reconciler = reconciler_requests().await;
    // Sanity: the scenarios reach every kind of child and every verb on them.
    for line in [
        format!("POST {NS}/secrets"),
        format!("PATCH {NS}/persistentvolumeclaims/volume-data"),
        format!("DELETE {BATCH}/cronjobs/demo-gc"),
        format!("PATCH {BATCH}/cronjobs/demo-warm"),
        format!("DELETE {BATCH}/cronjobs/demo-warm"),
        format!("PATCH {BATCH}/cronjobs/demo-fsck"),
        format!("DELETE {BATCH}/cronjobs/demo-fsck"),
        "PATCH /apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/demo".to_owned(),
        "DELETE /apis/policy/v1/namespaces/default/poddisruptionbudgets/demo".to_owned(),
        format!("GET {APPS}/deployments/demo"),
        format!("PATCH {NC}/demo/status"),
    ] {
        assert!(
            reconciler.iter().any(|r| r.line() == line),
            "the scenarios never sent {line}"
        );
    }
    assert!(
        reconciler
            .iter()
            .any(|r| r.method == "DELETE" && r.path.starts_with(&format!("{BATCH}/jobs/"))),
        "a superseded migration Job is deleted"
    );
    assert!(
        reconciler
            .iter()
            .any(|r| r.method == "PATCH" && r.path.contains("/events/")),
        "a repeated event is patched"
    );

    // 1. Defaults: cluster-wide, one replica, no leader election.
    let docs = tools::render(&helm, &[]);
    assert_eq!(
        tools::env(
            tools::one(&docs, "Deployment"),
            "NIXCACHE_OPERATOR_LEADER_ELECTION"
        ),
        Some("false")
    );
    let mut requests = reconciler.clone();
    requests.extend(controller_requests(Scope::Cluster).await);
    requests.extend(poller_requests(Scope::Cluster).await);
    assert_exact("default values", &grants(&docs), &requests);

    // 2. Two replicas: the Lease too, in the release namespace, by name.
    let docs = tools::render(&helm, &["--set", "replicaCount=2"]);
    let deployment = tools::one(&docs, "Deployment");
    assert_eq!(
        tools::env(deployment, "NIXCACHE_OPERATOR_LEADER_ELECTION"),
        Some("true")
    );
    let lease = tools::env(deployment, "NIXCACHE_OPERATOR_LEASE_NAME")
        .unwrap()
        .to_owned();
    let leases = leader_election_requests(tools::RELEASE_NAMESPACE, &lease).await;
    let mut with_lease = requests.clone();
    with_lease.extend(leases.iter().cloned());
    assert_exact("replicaCount=2", &grants(&docs), &with_lease);
    // The Lease grant is by name: another Lease in that namespace is not writable.
    let other = leader_election_requests(tools::RELEASE_NAMESPACE, "someone-elses-lease").await;
    let grants2 = grants(&docs);
    assert!(
        checks(other.iter().find(|r| r.method == "PUT").unwrap())
            .iter()
            .any(|c| !grants2.iter().any(|g| g.allows(c))),
        "only the operator's own Lease may be replaced"
    );

    // 3. watchNamespace: only Roles; the controller lists and watches in that namespace.
    let docs = tools::render(
        &helm,
        &["--set", "replicaCount=2", "--set", "watchNamespace=default"],
    );
    let kinds = rbac_kinds(&docs);
    assert!(
        !kinds.iter().any(|k| k.starts_with("ClusterRoleBinding")),
        "no cluster-wide binding with watchNamespace: {kinds:?}"
    );
    let grants3 = grants(&docs);
    assert!(grants3.iter().all(|g| g.namespace.is_some()), "{grants3:#?}");
    let mut namespaced = reconciler.clone();
    namespaced.extend(controller_requests(Scope::Namespace("default".into())).await);
    namespaced.extend(poller_requests(Scope::Namespace("default".into())).await);
    namespaced.extend(leases.iter().cloned());
    assert_exact("watchNamespace=default", &grants3, &namespaced);
    // And the cluster-wide watches of install 1 would be denied here.
    let cluster_watch = controller_requests(Scope::Cluster).await;
    let denied = cluster_watch
        .iter()
        .flat_map(checks)
        .filter(|c| !grants3.iter().any(|g| g.allows(c)))
        .count();
    assert!(denied > 0, "a namespaced install cannot watch every namespace");

    // 4. rbac.create=false: nothing bound; the aggregated roles are never bound to the operator.
    let docs = tools::render(&helm, &["--set", "rbac.create=false"]);
    assert!(rbac_kinds(&docs).is_empty(), "{:?}", rbac_kinds(&docs));
}

#[test]
fn requests_map_to_the_checks_the_api_server_makes() {
    let r = |method: &str, path: &str, query: &str, body: Option<Value>| Recorded {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        content_type: None,
        body,
    };
    let short = |rs: Recorded| -> Vec<String> {
        checks(&rs)
            .into_iter()
            .map(|c| {
                format!(
                    "{} {} {} {:?} {:?}",
                    c.verb, c.group, c.resource, c.namespace, c.name
                )
            })
            .collect()
    };
    assert_eq!(
        short(r("GET", "/api/v1/secrets", "", None)),
        ["list  secrets None None"]
    );
    assert_eq!(
        short(r(
            "GET",
            "/apis/apps/v1/namespaces/x/deployments",
            "watch=true&resourceVersion=1",
            None
        )),
        ["watch apps deployments Some(\"x\") None"]
    );
    assert_eq!(
        short(r(
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/x/leases/l",
            "",
            None
        )),
        ["update coordination.k8s.io leases Some(\"x\") Some(\"l\")"]
    );
    assert_eq!(
        short(r(
            "PATCH",
            "/apis/nixcache.dev/v1alpha1/namespaces/x/nixcaches/c/status",
            "fieldManager=m",
            None
        )),
        ["patch nixcache.dev nixcaches/status Some(\"x\") Some(\"c\")"]
    );
    // A server-side apply with a blocking owner reference: patch, create, and the owner's finalizers.
    let owned = json!({"metadata": {"ownerReferences": [{"apiVersion": "nixcache.dev/v1alpha1",
        "kind": "NixCache", "name": "c", "uid": "u", "controller": true, "blockOwnerDeletion": true}]}});
    assert_eq!(
        short(r(
            "PATCH",
            "/apis/apps/v1/namespaces/x/deployments/c",
            "fieldManager=m&force=true",
            Some(owned)
        )),
        [
            "patch apps deployments Some(\"x\") Some(\"c\")",
            "create apps deployments Some(\"x\") None",
            "update nixcache.dev nixcaches/finalizers Some(\"x\") Some(\"c\")",
        ]
    );
    // The event recorder's merge patch creates nothing.
    assert_eq!(
        short(r(
            "PATCH",
            "/apis/events.k8s.io/v1/namespaces/x/events/e",
            "",
            Some(json!({}))
        )),
        ["patch events.k8s.io events Some(\"x\") Some(\"e\")"]
    );
}
