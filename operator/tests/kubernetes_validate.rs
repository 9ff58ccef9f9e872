//! Every manifest the operator renders for every example goes through `kubernetes-validate
//! --strict` for Kubernetes 1.33 (the API version the operator is built against: k8s-openapi's
//! `v1_33`). The tool bundles Kubernetes' schemas, so this runs offline.
//!
//! The tool is looked up at `NIXCACHE_TEST_KUBERNETES_VALIDATE`, on `PATH`, then in the venv
//! `.ci/run` makes (`~/.cache/nixcache-tools/kubernetes-validate-venv`). Missing, the tests print
//! `SKIP: …` and pass, except under `CI` or `NIXCACHE_TEST_REQUIRE_K8S_VALIDATE=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use nixcache_crds::{Fsck, NixCache, Warm};
use nixcache_operator::fixtures::HELLO;
use nixcache_operator::render::{self, Plan};
use nixcache_operator::Config;
use nixcache_protocol::SigningKey;
use serde_json::Value;

const KUBERNETES_VERSION: &str = "1.33.0";

fn tool() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("NIXCACHE_TEST_KUBERNETES_VALIDATE") {
        return Some(PathBuf::from(path));
    }
    let works = |p: &Path| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let on_path = PathBuf::from("kubernetes-validate");
    if works(&on_path) {
        return Some(on_path);
    }
    let home = std::env::var("HOME").ok()?;
    let venv =
        Path::new(&home).join(".cache/nixcache-tools/kubernetes-validate-venv/bin/kubernetes-validate");
    works(&venv).then_some(venv)
}

fn required() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
        || std::env::var("NIXCACHE_TEST_REQUIRE_K8S_VALIDATE").is_ok_and(|v| v == "1")
}

fn tool_or_skip() -> Option<PathBuf> {
    let found = tool();
    if found.is_none() {
        assert!(
            !required(),
            "kubernetes-validate is required (CI or NIXCACHE_TEST_REQUIRE_K8S_VALIDATE=1) but was not found; \
             .ci/run installs it"
        );
        eprintln!("SKIP: kubernetes-validate not found (pip install kubernetes-validate, or run .ci/run)");
    }
    found
}

/// Runs the tool on `docs` (one YAML file); `Err(output)` when it rejects them.
fn validate(tool: &Path, docs: &[Value]) -> Result<(), String> {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    for doc in docs {
        writeln!(file, "---\n{}", serde_yaml::to_string(doc).unwrap()).unwrap();
    }
    let out = Command::new(tool)
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION, "--quiet"])
        .arg(file.path())
        .output()
        .expect("kubernetes-validate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && !text.contains("ERROR") {
        Ok(())
    } else {
        Err(text)
    }
}

fn examples() -> Vec<(String, NixCache)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 3);
    files
        .into_iter()
        .map(|path| {
            let mut nc: NixCache = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            nc.metadata.uid = Some("0b7e2b4c-5f2a-4c1e-9a59-3d1c2f6f0a11".into());
            // Every optional child: not every example has warm-up or fsck.
            nc.spec.warm.get_or_insert_with(|| Warm {
                schedule: "30 4 * * *".into(),
                time_zone: Some("Europe/Berlin".into()),
                paths: vec![HELLO.into()],
                narinfos_only: true,
                concurrency: Some(4),
                // A private cache's asks for one; the others' can show one too.
                credential_secret_ref: Some(nixcache_crds::SecretKeyRef {
                    name: "warm-credential".into(),
                    key: None,
                }),
            });
            nc.spec.fsck.get_or_insert_with(|| Fsck {
                schedule: "0 5 * * 0".into(),
                time_zone: Some("Europe/Berlin".into()),
                verify: true,
                repair: true,
            });
            (path.file_name().unwrap().to_string_lossy().into_owned(), nc)
        })
        .collect()
}

/// Every object the operator can render for `nc`.
fn rendered(nc: &NixCache) -> Vec<Value> {
    let plan = Plan::new(
        nc,
        &Config::default(),
        "0123456789".into(),
        Some("abcdef0123".into()),
    );
    let key = SigningKey::generate("test-1").unwrap();
    let mut docs = vec![
        serde_json::to_value(render::service(nc)).unwrap(),
        serde_json::to_value(render::deployment(nc, &plan)).unwrap(),
        serde_json::to_value(render::signing_secret(nc, &key)).unwrap(),
    ];
    let optional = [
        render::persistent_volume_claim(nc).map(|o| serde_json::to_value(o).unwrap()),
        render::migrate_job(nc, &plan).map(|o| serde_json::to_value(o).unwrap()),
        render::gc_cronjob(nc, &plan).map(|o| serde_json::to_value(o).unwrap()),
        render::fsck_cronjob(nc, &plan).map(|o| serde_json::to_value(o).unwrap()),
        render::warm_cronjob(nc, &plan)
            .unwrap()
            .map(|o| serde_json::to_value(o).unwrap()),
        render::horizontal_pod_autoscaler(nc).map(|o| serde_json::to_value(o).unwrap()),
        render::pod_disruption_budget(nc).map(|o| serde_json::to_value(o).unwrap()),
    ];
    docs.extend(optional.into_iter().flatten());
    docs
}

#[test]
fn every_rendered_manifest_is_valid_for_kubernetes_1_33() {
    let Some(tool) = tool_or_skip() else { return };
    let mut kinds = std::collections::BTreeSet::new();
    for (file, nc) in examples() {
        let docs = rendered(&nc);
        kinds.extend(docs.iter().map(|d| d["kind"].as_str().unwrap().to_owned()));
        assert!(
            docs.iter().any(|d| d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-warm"))),
            "{file}: the warm-up CronJob is checked"
        );
        assert_eq!(
            docs.iter().any(|d| d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-fsck"))),
            nc.spec.storage.s3.is_some(),
            "{file}: the fsck CronJob is checked (S3 only)"
        );
        if let Err(output) = validate(&tool, &docs) {
            panic!("{file}: rendered manifests rejected by kubernetes-validate --strict:\n{output}");
        }
    }
    let all = [
        "CronJob",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Job",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "Secret",
        "Service",
    ];
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        all,
        "every kind of child was checked"
    );
}

#[test]
fn the_check_rejects_an_unknown_field() {
    let Some(tool) = tool_or_skip() else { return };
    let (_, nc) = examples().remove(0);
    let mut deployment = rendered(&nc).remove(1);
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = serde_json::json!({});
    let output = validate(&tool, &[deployment]).expect_err("a misspelt field is rejected");
    assert!(output.contains("livenesProbe"), "{output}");
}
