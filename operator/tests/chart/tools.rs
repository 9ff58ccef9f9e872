//! Shared by the chart tests (`chart.rs`, `chart_rbac.rs`): finding the pinned tools that
//! `.ci/chart-tools.sh` installs, rendering the chart with `helm template`, and parsing what it
//! prints.
//!
//! Tools are looked up at `NIXCACHE_TEST_<TOOL>` (an explicit path), in
//! `~/.cache/nixcache-tools` (where `.ci/chart-tools.sh` puts them), then on `PATH`. A missing tool
//! makes a test print `SKIP: …` and pass, except under `CI` or `NIXCACHE_TEST_REQUIRE_K8S_TOOLS=1`,
//! where it fails.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize as _;
use serde_json::Value;

/// The Kubernetes version the operator is built against (k8s-openapi's `v1_33`).
pub const TARGET_KUBERNETES: &str = "1.33.0";
/// Every minor version the chart supports (Chart.yaml `kubeVersion: >=1.29.0-0`) up to the newest
/// the pinned helm/kubectl (1.35) know: the rendered manifests are validated against each.
pub const SUPPORTED_KUBERNETES: &[&str] = &[
    "1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0",
];
/// Release name and namespace of every rendering.
pub const RELEASE: &str = "nixcache-operator";
pub const RELEASE_NAMESPACE: &str = "nixcache-system";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn chart_dir() -> PathBuf {
    repo_root().join("helm/nixcache-operator")
}

/// The example values files of the chart (`ci/*-values.yaml`), sorted.
pub fn ci_values_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    files.sort();
    files
}

/// True under `CI` or `NIXCACHE_TEST_REQUIRE_K8S_TOOLS=1`: missing tools are then failures.
pub fn required() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
        || std::env::var("NIXCACHE_TEST_REQUIRE_K8S_TOOLS").is_ok_and(|v| v == "1")
}

fn tools_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/nixcache-tools"))
}

fn runs(program: &Path, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `name` from `env_var`, then the tool dir's `relative` paths, then `PATH`, if it runs with
/// `version_arg`.
fn find(name: &str, env_var: &str, relative: &[&str], version_arg: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        return Some(PathBuf::from(path));
    }
    let in_tools = tools_dir()
        .into_iter()
        .flat_map(|dir| relative.iter().map(move |r| dir.join(r)));
    in_tools
        .chain(std::iter::once(PathBuf::from(name)))
        .find(|p| runs(p, version_arg))
}

/// Returns the tool, or `None` after printing `SKIP: …` (panics instead when tools are required).
fn or_skip(tool: Option<PathBuf>, what: &str) -> Option<PathBuf> {
    if tool.is_none() {
        assert!(
            !required(),
            "{what} is required (CI or NIXCACHE_TEST_REQUIRE_K8S_TOOLS=1) but was not found; \
             `bash .ci/chart-tools.sh` installs it"
        );
        eprintln!("SKIP: {what} not found (run `bash .ci/chart-tools.sh`)");
    }
    tool
}

pub fn helm() -> Option<PathBuf> {
    or_skip(
        find("helm", "NIXCACHE_TEST_HELM", &["bin/helm"], "version"),
        "helm",
    )
}

pub fn kubernetes_validate() -> Option<PathBuf> {
    or_skip(
        find(
            "kubernetes-validate",
            "NIXCACHE_TEST_KUBERNETES_VALIDATE",
            &["kubernetes-validate-venv/bin/kubernetes-validate"],
            "--version",
        ),
        "kubernetes-validate",
    )
}

pub fn shellcheck() -> Option<PathBuf> {
    or_skip(
        find(
            "shellcheck",
            "NIXCACHE_TEST_SHELLCHECK",
            &["bin/shellcheck"],
            "--version",
        ),
        "shellcheck",
    )
}

/// `node_modules` holding @kubernetes-models/prometheus-operator, and `node`.
pub fn servicemonitor_checker() -> Option<(PathBuf, PathBuf)> {
    let modules = std::env::var_os("NIXCACHE_TEST_SERVICEMONITOR_MODULES")
        .map(PathBuf::from)
        .or_else(|| tools_dir().map(|d| d.join("servicemonitor-check/node_modules")))
        .filter(|m| m.join("@kubernetes-models/prometheus-operator").is_dir());
    let node = find("node", "NIXCACHE_TEST_NODE", &[], "--version");
    let found = modules.zip(node);
    if found.is_none() {
        or_skip(
            None,
            "the ServiceMonitor checker (node and @kubernetes-models/prometheus-operator)",
        );
    }
    found
}

/// Output of a command as one string (stdout then stderr).
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm template` of the chart as release `nixcache-operator` in `nixcache-system`, for
/// Kubernetes 1.33, with `args` (`-f FILE`, `--set k=v`); `Err(helm's output)` when it fails.
pub fn template(helm: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm)
        .args(["template", RELEASE])
        .arg(chart_dir())
        .args([
            "--namespace",
            RELEASE_NAMESPACE,
            "--kube-version",
            TARGET_KUBERNETES,
        ])
        .args(args)
        .output()
        .expect("helm runs");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(text(&out))
    }
}

/// The objects of a multi-document YAML stream (empty documents dropped).
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("helm printed valid YAML"))
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_value(v).unwrap())
        .collect()
}

/// Renders with `args` and parses; panics with helm's output when rendering fails.
pub fn render(helm: &Path, args: &[&str]) -> Vec<Value> {
    match template(helm, args) {
        Ok(yaml) => documents(&yaml),
        Err(output) => panic!("helm template {args:?} failed:\n{output}"),
    }
}

/// The objects of `kind`.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The one object of `kind`.
pub fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "exactly one {kind} expected");
    found[0]
}

/// The value of env var `name` of the operator container (`None` when unset or from a ref).
pub fn env<'a>(deployment: &'a Value, name: &str) -> Option<&'a str> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}
