//! [`ControlPlane`]: the real Kubernetes control plane of `e2e/kube/kube-control-plane.sh`
//! (etcd, kube-apiserver and kube-controller-manager 1.20 from Debian's source package, CRDs
//! served by apiextensions-apiserver 1.36), started once and shared by every test of a process.
//!
//! Without it the tests print a `SKIP` line and pass, unless `CI` or
//! `NIXCACHE_TEST_REQUIRE_KUBE=1` is set: then the script is run (it builds the binaries on first
//! use, 12 to 17 minutes on 2 cores, cached in `~/.cache/kube-testbed`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::util::{run_bounded, run_ok, run_ok_with};

/// The `KEY=VALUE` lines the script prints on start.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    env: BTreeMap<String, String>,
}

/// What a test prints when the control plane is not there.
pub const SKIP_MESSAGE: &str =
    "SKIP kube: no Kubernetes control plane (run `bash e2e/kube/kube-control-plane.sh start` \
     once, ~12 min, or set NIXCACHE_TEST_REQUIRE_KUBE=1)";

/// `kubectl` arguments of a server-side apply of stdin, as the tests' field manager `e2e`.
pub const APPLY: &[&str] = &[
    "apply",
    "--server-side",
    "--force-conflicts",
    "--field-manager",
    "e2e",
    "-f",
    "-",
];

const START_TIMEOUT: Duration = Duration::from_secs(40 * 60);
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

/// `e2e/kube/` in this checkout.
pub fn kube_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kube")
}

fn required() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    set("CI") || set("NIXCACHE_TEST_REQUIRE_KUBE")
}

/// True when a build of the control plane is cached, so starting it takes seconds.
fn built() -> bool {
    let cache = std::env::var_os("KTB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            base.join("kube-testbed")
        });
    std::fs::read_dir(&cache).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().join("bin/kube-apiserver").is_file())
    })
}

impl ControlPlane {
    /// The running control plane (started on first use), or `None` after a `SKIP` line.
    pub fn get() -> Result<Option<&'static ControlPlane>> {
        static PLANE: OnceLock<Result<Option<ControlPlane>, String>> = OnceLock::new();
        let plane = PLANE.get_or_init(|| Self::start().map_err(|e| format!("{e:#}")));
        match plane {
            Ok(Some(plane)) => Ok(Some(plane)),
            Ok(None) => {
                let _ = writeln!(std::io::stderr(), "{SKIP_MESSAGE}");
                Ok(None)
            }
            Err(e) => Err(anyhow!("{e}")),
        }
    }

    fn start() -> Result<Option<ControlPlane>> {
        if !required() && !built() {
            return Ok(None);
        }
        let script = kube_dir().join("kube-control-plane.sh");
        let mut cmd = Command::new("bash");
        // The tests run their own process kubelet (see `pods`); the script's fake one would
        // fight it over the same pods.
        cmd.arg(&script).arg("start").env("KTB_FAKE_KUBELET", "0");
        let out = run_bounded(&mut cmd, START_TIMEOUT)?;
        if !out.status.success() {
            bail!(
                "{} start failed ({}):\n{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect::<BTreeMap<_, _>>();
        let plane = ControlPlane { env };
        plane.var("KUBECONFIG")?;
        Ok(Some(plane))
    }

    /// One of the script's `KEY=VALUE` lines.
    pub fn var(&self, key: &str) -> Result<&str> {
        self.env
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("the control plane script printed no {key}"))
    }

    /// The admin kubeconfig (group `system:masters`).
    pub fn kubeconfig(&self) -> &str {
        self.env.get("KUBECONFIG").map_or("", String::as_str)
    }

    /// kube-apiserver's version, e.g. `1.20.2`.
    pub fn version(&self) -> &str {
        self.env.get("KUBE_VERSION").map_or("?", String::as_str)
    }

    /// The version of the server that serves CRDs (1.36 in the default hybrid).
    pub fn crd_version(&self) -> &str {
        self.env
            .get("KUBE_CRD_SERVER_VERSION")
            .map_or("?", String::as_str)
    }

    /// The file of `KEY=VALUE` lines (what `process-kubelet.py --env-file` reads).
    pub fn env_file(&self) -> Result<PathBuf> {
        Ok(PathBuf::from(self.var("KUBE_STATE_DIR")?).join("env"))
    }

    /// `kubectl ARGS` as the admin; stdout on success.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_as(self.kubeconfig(), args, None)
    }

    /// `kubectl ARGS` with `kubeconfig`, `stdin` piped in when given; stdout on success.
    pub fn kubectl_as(&self, kubeconfig: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", kubeconfig)
            .arg("--request-timeout=30s")
            .args(args);
        let Some(input) = stdin else {
            return run_ok(&mut cmd, KUBECTL_TIMEOUT);
        };
        let file = tempfile::NamedTempFile::new()?;
        std::fs::write(file.path(), input)?;
        run_ok_with(
            &mut cmd,
            KUBECTL_TIMEOUT,
            std::fs::File::open(file.path())?.into(),
        )
    }

    /// `kubectl apply --server-side` of `yaml` (field manager `e2e`).
    pub fn apply(&self, yaml: &str) -> Result<String> {
        self.kubectl_as(self.kubeconfig(), APPLY, Some(yaml))
    }

    /// `kubectl get ARGS -o json`, parsed; `None` when it does not exist.
    pub fn get_json(&self, args: &[&str]) -> Result<Option<Value>> {
        let mut all = vec!["get"];
        all.extend(args);
        all.extend(["-o", "json", "--ignore-not-found"]);
        let text = self.kubectl(&all)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(
            serde_json::from_str(&text).context("kubectl printed no JSON")?,
        ))
    }
}
