//! One test's world: a namespace with the chart's RBAC, PostgreSQL and S3 (s3s-fs) for the
//! NixCache, a signed upstream, the process kubelet that runs its pods, and operator replicas.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use nixcache::db::{testdb::TestDb, Engine};
use nixcache_e2e::kube::bins::nixcache_bin;
use nixcache_e2e::kube::{
    wait, ControlPlane, OperatorOptions, OperatorProcess, ProcessKubelet, ServiceProxy, TestNamespace,
};
use nixcache_e2e::{nix_available, TestUpstream, UpstreamCache};
use nixcache_testsupport::s3::{S3sFs, ACCESS_KEY, SECRET_KEY};
use serde_json::Value;

/// The proxy images the kubelet runs (both the `nixcache` binary built alone).
pub const IMAGE: &str = "nixcache:test";
pub const IMAGE_V2: &str = "nixcache:v2";

pub struct World {
    pub ns: TestNamespace,
    pub cache: UpstreamCache,
    pub upstream: TestUpstream,
    pub _db: TestDb,
    pub s3: S3sFs,
    pub bucket: String,
    pub kubelet: ProcessKubelet,
    pub operators: Vec<OperatorProcess>,
    /// More flags for the operators started from now on.
    pub operator_args: Vec<String>,
}

impl World {
    /// Everything but the operator; `None` (after a SKIP line) when a part is missing here.
    pub async fn start(prefix: &str) -> Result<Option<World>> {
        let Some(plane) = ControlPlane::get()? else {
            return Ok(None);
        };
        if !nix_available() {
            return Ok(None);
        }
        let Some(db) = TestDb::fresh(Engine::Postgres).await else {
            return Ok(None);
        };
        let Some(s3) = S3sFs::start().await? else {
            return Ok(None);
        };
        let bucket = s3.create_bucket()?;
        let cache = UpstreamCache::get("zstd", "e2e")?;
        let upstream = TestUpstream::start(&cache.dir)?;
        let ns = TestNamespace::create(plane, prefix).await?;
        let bin: PathBuf = tokio::task::spawn_blocking(nixcache_bin).await??;
        let kubelet =
            ProcessKubelet::start(plane, &ns.name, &[(IMAGE, &bin), (IMAGE_V2, &bin)], ns.dir.path()).await?;
        ns.secret("db", &[("url", db.url())])?;
        ns.secret(
            "s3",
            &[
                ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
                ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ],
        )?;
        eprintln!(
            "[kube] namespace {} on kube-apiserver {} (CRDs: {})",
            ns.name,
            plane.version(),
            plane.crd_version()
        );
        Ok(Some(World {
            ns,
            cache,
            upstream,
            _db: db,
            s3,
            bucket,
            kubelet,
            operators: Vec::new(),
            operator_args: Vec::new(),
        }))
    }

    pub fn plane(&self) -> &'static ControlPlane {
        self.ns.plane
    }

    /// Starts an operator replica named `identity`, its clock shifted by `clock_offset`.
    pub async fn start_operator(&mut self, identity: &str, clock_offset: Option<&str>) -> Result<usize> {
        let kubeconfig = self.ns.operator_kubeconfig.clone();
        self.start_operator_with(identity, clock_offset, kubeconfig).await
    }

    /// Like [`Self::start_operator`], reaching the API server through `kubeconfig`.
    pub async fn start_operator_with(
        &mut self,
        identity: &str,
        clock_offset: Option<&str>,
        kubeconfig: PathBuf,
    ) -> Result<usize> {
        let operator = OperatorProcess::start(OperatorOptions {
            kubeconfig,
            namespace: self.ns.name.clone(),
            identity: identity.into(),
            proxy_image: IMAGE.into(),
            log_dir: self.ns.dir.path().to_path_buf(),
            clock_offset: clock_offset.map(str::to_owned),
            extra_args: self.operator_args.clone(),
        })
        .await?;
        self.operators.push(operator);
        Ok(self.operators.len() - 1)
    }

    /// A NixCache on this world's PostgreSQL and S3, with `extra` appended to its spec (YAML
    /// lines indented by two spaces).
    pub fn nixcache_yaml(&self, name: &str, replicas: i32, extra: &str) -> String {
        format!(
            "apiVersion: nixcache.dev/v1alpha1\nkind: NixCache\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  \
             upstreams:\n  - url: {upstream}\n    publicKeys: [\"{key}\"]\n  storage:\n    s3:\n      bucket: {bucket}\n      \
             endpoint: {endpoint}\n      region: us-east-1\n      pathStyle: true\n      prefix: {name}\n      \
             credentialsSecretRef: {{name: s3}}\n  database:\n    urlSecretRef: {{name: db}}\n  gc:\n    maxSize: 10G\n  \
             extraArgs: [\"--lease-ttl\", \"2s\"]\n{extra}",
            upstream = self.upstream.url,
            key = self.cache.public_key,
            bucket = self.bucket,
            endpoint = self.s3.endpoint(),
        )
    }

    /// The NixCache `name` as the API server has it.
    pub fn nixcache(&self, name: &str) -> Result<Value> {
        self.ns
            .get_json(&["nixcache", name])?
            .with_context(|| format!("NixCache {name} does not exist"))
    }

    /// The holder of the operators' leader Lease.
    pub fn leader(&self) -> Result<String> {
        self.ns.kubectl(&[
            "get",
            "lease",
            "nixcache-operator",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
    }

    /// Waits until `name` is Ready with `replicas` ready replicas on the current generation.
    pub async fn wait_ready(&mut self, name: &str, replicas: i64, timeout: Duration) -> Result<Value> {
        let result = wait::until(
            &format!("NixCache {name} ready with {replicas} replicas"),
            timeout,
            || async {
                let nc = self.nixcache(name)?;
                let status = &nc["status"];
                let ready = condition(&nc, "Ready").is_some_and(|c| c["status"] == "True");
                let current = status["observedGeneration"] == nc["metadata"]["generation"];
                let counts = status["readyReplicas"].as_i64() == Some(replicas)
                    && self.running_pods(name)?.len() as i64 == replicas;
                Ok((ready && current && counts).then_some(nc))
            },
        )
        .await;
        self.kubelet.check_alive()?;
        result.with_context(|| self.describe(name))
    }

    /// Waits until `name`'s `Degraded` condition has `status` (and `reason`, when given); the
    /// NixCache as it was then.
    pub async fn wait_degraded(&self, name: &str, status: &str, reason: Option<&str>) -> Result<Value> {
        let what = format!("NixCache {name} Degraded={status} {}", reason.unwrap_or(""));
        wait::until(&what, Duration::from_secs(180), || async {
            let nc = self.nixcache(name)?;
            let degraded = condition(&nc, "Degraded").cloned().unwrap_or_default();
            let matches = degraded["status"] == status && reason.is_none_or(|r| degraded["reason"] == r);
            Ok(matches.then_some(nc))
        })
        .await
        .with_context(|| self.describe(name))
    }

    /// Names of the Running, Ready proxy pods of `name`.
    pub fn running_pods(&self, name: &str) -> Result<Vec<String>> {
        let selector = format!("app.kubernetes.io/instance={name},app.kubernetes.io/component=proxy");
        let pods = self.ns.get_json(&["pods", "-l", &selector])?.unwrap_or_default();
        Ok(pods["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] == "Running")
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            })
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
            .collect())
    }

    /// The Service stand-in for `name`.
    pub async fn service(&self, name: &str) -> Result<ServiceProxy> {
        ServiceProxy::start(self.plane(), &self.ns.name, name, self.ns.dir.path()).await
    }

    /// What a person would look at: the NixCache, its children, the pods, events, logs.
    pub fn describe(&self, name: &str) -> String {
        let get = |args: &[&str]| self.ns.kubectl(args).unwrap_or_else(|e| format!("{e:#}"));
        let mut out = String::new();
        out.push_str(&get(&["get", "nixcache", name, "-o", "yaml"]));
        out.push_str(&get(&[
            "get",
            "deployments,replicasets,pods,jobs,services,secrets",
            "-o",
            "wide",
        ]));
        out.push_str(&get(&["get", "events", "--sort-by=.metadata.creationTimestamp"]));
        for operator in &self.operators {
            out.push_str(&format!(
                "--- operator {} ---\n{}\n",
                operator.identity,
                operator.log_tail(40)
            ));
        }
        out.push_str(&self.kubelet.logs(15));
        out
    }
}

/// The condition `type_` of a NixCache (or any object with status.conditions).
pub fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}
