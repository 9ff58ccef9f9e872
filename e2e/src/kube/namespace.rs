//! [`TestNamespace`]: a namespace of its own per test, with the operator's ServiceAccount and the
//! chart's RBAC for a namespaced install (`watchNamespace` = this namespace), rendered by
//! `helm template` from `helm/nixcache-operator`: the operator runs with exactly what the chart
//! grants, never as an admin.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use tempfile::TempDir;

use super::plane::ControlPlane;
use crate::util::run_ok;

/// The chart's release name: the ServiceAccount, Roles and Lease are named after it.
pub const RELEASE: &str = "nixcache-operator";

/// A namespace deleted (without waiting) when dropped.
pub struct TestNamespace {
    pub plane: &'static ControlPlane,
    pub name: String,
    /// Kubeconfig of the operator's ServiceAccount.
    pub operator_kubeconfig: PathBuf,
    token: String,
    /// Logs and files of this test.
    pub dir: TempDir,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `helm` on PATH, else where `.ci/chart-tools.sh` puts it.
fn helm() -> PathBuf {
    if let Some(dir) = std::env::var_os("HOME") {
        let pinned = PathBuf::from(dir).join(".cache/nixcache-tools/bin/helm");
        if pinned.is_file() {
            return pinned;
        }
    }
    PathBuf::from("helm")
}

/// Installs the NixCache CRD (once per process) and waits until it is served.
pub fn install_crd(plane: &ControlPlane) -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let crd =
            std::fs::read_to_string(workspace().join("crds/nixcache.yaml")).map_err(|e| e.to_string())?;
        plane.apply(&crd).map_err(|e| format!("{e:#}"))?;
        plane
            .kubectl(&[
                "wait",
                "--for",
                "condition=established",
                "--timeout=60s",
                "crd/nixcaches.nixcache.dev",
            ])
            .map_err(|e| format!("{e:#}"))?;
        Ok(())
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

impl TestNamespace {
    /// A fresh namespace `<prefix>-<random>` with the operator's ServiceAccount and RBAC.
    pub async fn create(plane: &'static ControlPlane, prefix: &str) -> Result<TestNamespace> {
        install_crd(plane)?;
        let name = format!("{prefix}-{:08x}", rand_u32());
        plane.kubectl(&["create", "namespace", &name])?;
        let dir = tempfile::Builder::new().prefix(&format!("{name}-")).tempdir()?;
        let rbac = render_rbac(&name)?;
        plane.apply(&rbac)?;
        let token = service_account_token(plane, &name).await?;
        let operator_kubeconfig = dir.path().join("operator.kubeconfig");
        std::fs::write(
            &operator_kubeconfig,
            kubeconfig(
                plane.var("KUBE_API_SERVER")?,
                plane.var("KUBE_CA_FILE")?,
                &token,
                &name,
            ),
        )?;
        Ok(TestNamespace {
            plane,
            name,
            operator_kubeconfig,
            token,
            dir,
        })
    }

    /// A kubeconfig of the operator's ServiceAccount that reaches the API server at `server`
    /// (e.g. through a [`super::relay::TcpRelay`]).
    pub fn operator_kubeconfig_via(&self, server: &str, file: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(file);
        let ca = self.plane.var("KUBE_CA_FILE")?;
        std::fs::write(&path, kubeconfig(server, ca, &self.token, &self.name))?;
        Ok(path)
    }

    /// Applies the chart's RBAC again with `edit` made to the rendered YAML (e.g. a verb
    /// removed, as a person would by mistake).
    pub fn apply_rbac_with(&self, edit: impl FnOnce(String) -> String) -> Result<()> {
        let rbac = edit(render_rbac(&self.name)?);
        self.apply(&rbac).map(drop)
    }

    /// `kubectl -n NS ARGS` as the admin.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend(args);
        self.plane.kubectl(&all)
    }

    /// `kubectl -n NS get ARGS -o json`; `None` when not found.
    pub fn get_json(&self, args: &[&str]) -> Result<Option<serde_json::Value>> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend(args);
        self.plane.get_json(&all)
    }

    /// `kubectl -n NS ARGS` as the admin, with `input` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend(args);
        self.plane.kubectl_as(self.plane.kubeconfig(), &all, Some(input))
    }

    /// Server-side apply of `yaml` into this namespace.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        self.kubectl_stdin(super::plane::APPLY, yaml)
    }

    /// A generic Secret `name` with literal `data`.
    pub fn secret(&self, name: &str, data: &[(&str, &str)]) -> Result<()> {
        let mut args = vec![
            "create".to_owned(),
            "secret".into(),
            "generic".into(),
            name.into(),
        ];
        args.extend(data.iter().map(|(k, v)| format!("--from-literal={k}={v}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.kubectl(&args).map(drop)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("NIXCACHE_TEST_KEEP_NAMESPACE").is_some() {
            eprintln!("[kube] keeping namespace {}", self.name);
            return;
        }
        let _ = self
            .plane
            .kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    let _ = getrandom::getrandom(&mut bytes);
    u32::from_le_bytes(bytes)
}

/// The chart's ServiceAccount, controller Role and leader-election Role for `namespace`.
fn render_rbac(namespace: &str) -> Result<String> {
    let chart = workspace().join("helm/nixcache-operator");
    let mut cmd = Command::new(helm());
    cmd.arg("template")
        .arg(RELEASE)
        .arg(&chart)
        .args(["--namespace", namespace])
        .args(["--set", &format!("watchNamespace={namespace}")])
        .args(["--set", "leaderElection.enabled=true"])
        .args(["--show-only", "templates/serviceaccount.yaml"])
        .args(["--show-only", "templates/rbac-controller.yaml"])
        .args(["--show-only", "templates/rbac-leader-election.yaml"]);
    run_ok(&mut cmd, Duration::from_secs(60)).context("helm template of the chart's RBAC")
}

/// The token of the ServiceAccount's legacy token Secret (Kubernetes < 1.24 makes one).
async fn service_account_token(plane: &ControlPlane, namespace: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let secret = plane.kubectl(&[
            "-n",
            namespace,
            "get",
            "serviceaccount",
            RELEASE,
            "-o",
            "jsonpath={.secrets[0].name}",
        ])?;
        if !secret.trim().is_empty() {
            let token = plane.kubectl(&[
                "-n",
                namespace,
                "get",
                "secret",
                secret.trim(),
                "-o",
                "jsonpath={.data.token}",
            ])?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(token.trim())?;
            return Ok(String::from_utf8(bytes)?);
        }
        if Instant::now() > deadline {
            bail!("ServiceAccount {namespace}/{RELEASE} got no token Secret within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn kubeconfig(server: &str, ca_file: &str, token: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    \
         certificate-authority: {ca_file}\nusers:\n- name: operator\n  user:\n    token: {token}\n\
         contexts:\n- name: test\n  context: {{cluster: test, user: operator, namespace: {namespace}}}\n\
         current-context: test\n"
    )
}
