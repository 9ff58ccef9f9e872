//! The Helm chart (`helm/nixcache-operator`), checked offline:
//! - its CRD is the generated one, its versions are the operator's, values.yaml and
//!   values.schema.json describe the same documented keys (no tools needed);
//! - `helm lint --strict` and `helm template` with the default values and every `ci/*-values.yaml`,
//!   every rendered object through `kubernetes-validate --strict` for each supported Kubernetes
//!   version; the kinds it has no schema for are checked too: the ServiceMonitor, PodMonitor and
//!   PrometheusRule with prometheus-operator's API types, the NixCache against the chart's own
//!   CRD schema (what the monitoring objects hold: `chart_monitoring.rs`);
//! - wrong values rejected by the schema, naming the key;
//! - what the Deployment passes the operator is what the operator reads;
//! - `e2e/kind/run.sh` is shellcheck-clean and skips cleanly without Docker or kind.
//!
//! The RBAC is checked against the operator's real requests in `chart_rbac.rs`.
//! Tools: see `chart/tools.rs` (`.ci/chart-tools.sh` installs them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "chart/tools.rs"]
mod tools;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use tools::{env, of_kind, one, render, template};

fn read(relative: &str) -> String {
    let path = tools::repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(relative: &str) -> Value {
    serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(&read(relative)).unwrap()).unwrap()
}

// ---------------------------------------------------------------- without tools

#[test]
fn the_chart_crd_is_the_generated_crd() {
    let generated = read("crds/nixcache.yaml");
    let in_chart = read("helm/nixcache-operator/crds/nixcache.yaml");
    assert!(
        generated == in_chart,
        "helm/nixcache-operator/crds/nixcache.yaml differs from crds/nixcache.yaml; copy it:\n  \
         cp crds/nixcache.yaml helm/nixcache-operator/crds/nixcache.yaml"
    );
}

#[test]
fn chart_and_images_carry_the_operator_version() {
    let version = nixcache_operator::config::VERSION;
    let chart = yaml("helm/nixcache-operator/Chart.yaml");
    assert_eq!(
        chart["appVersion"], version,
        "Chart.yaml appVersion must be the operator's crate version"
    );
    let values = yaml("helm/nixcache-operator/values.yaml");
    // Empty tags mean appVersion, so both images follow the operator's version.
    assert_eq!(values["image"]["tag"], "");
    assert_eq!(values["proxyImage"]["tag"], "");
    assert_eq!(
        format!(
            "{}:{version}",
            values["proxyImage"]["repository"].as_str().unwrap()
        ),
        nixcache_operator::config::default_image(nixcache_operator::config::DEFAULT_PROXY_REPOSITORY),
        "the chart's default proxy image is the operator's own default"
    );
    // The Dockerfile labels both images with the version; its default must follow the crate.
    let dockerfile = read("docker/Dockerfile");
    let defaults: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ARG VERSION="))
        .collect();
    assert_eq!(
        defaults,
        [version, version],
        "docker/Dockerfile: both images' `ARG VERSION` must default to the crate version"
    );
    // Each image: the distroless nonroot runtime, the chart's UID, the binary as entrypoint.
    assert!(dockerfile.contains("ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot"));
    let run_as = values["podSecurityContext"]["runAsUser"].as_i64().unwrap();
    for binary in ["nixcache", "nixcache-operator"] {
        let stage = dockerfile
            .split("\nFROM ")
            .find(|s| s.starts_with(&format!("${{RUNTIME_IMAGE}} AS {binary}\n")))
            .unwrap_or_else(|| panic!("docker/Dockerfile lacks the target {binary} on the runtime image"));
        for line in [
            format!("USER {run_as}:{run_as}"),
            format!("ENTRYPOINT [\"/usr/local/bin/{binary}\"]"),
            "org.opencontainers.image.version=\"${VERSION}\"".to_owned(),
        ] {
            assert!(stage.contains(&line), "image {binary}: no `{line}`");
        }
        assert!(
            !stage.contains("RUN "),
            "image {binary}: nothing runs in the runtime stage (no shell)"
        );
    }
    let proxy = read("proxy/Cargo.toml");
    assert!(
        proxy.contains("version.workspace = true"),
        "the proxy shares the workspace version, so one tag fits both images"
    );
}

/// Paths of the keys values.schema.json declares (`a.b.c`), and of those that are closed
/// (`additionalProperties: false`) objects.
fn schema_keys(schema: &Value, prefix: &str, keys: &mut Vec<String>) {
    if let Some(props) = schema["properties"].as_object() {
        for (k, sub) in props {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            keys.push(path.clone());
            if sub["additionalProperties"] == false {
                schema_keys(sub, &path, keys);
            }
        }
    }
}

#[test]
fn values_yaml_and_the_schema_describe_the_same_documented_keys() {
    let schema = yaml("helm/nixcache-operator/values.schema.json");
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown top-level keys are rejected"
    );
    let mut declared = Vec::new();
    schema_keys(&schema, "", &mut declared);

    // The keys of values.yaml by indentation, with whether a comment stands right above.
    let text = read("helm/nixcache-operator/values.yaml");
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut found = BTreeSet::new();
    let mut undocumented = Vec::new();
    let mut previous = "";
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let key = trimmed
            .split_once(':')
            .map(|(k, _)| k)
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()));
        if let (false, Some(key)) = (trimmed.starts_with('#') || trimmed.starts_with('-'), key) {
            stack.retain(|(i, _)| *i < indent);
            let path = stack
                .iter()
                .map(|(_, k)| k.as_str())
                .chain([key])
                .collect::<Vec<_>>()
                .join(".");
            if declared.contains(&path) {
                if !previous.trim_start().starts_with('#') {
                    undocumented.push(path.clone());
                }
                found.insert(path);
            }
            stack.push((indent, key.to_owned()));
        }
        if !trimmed.is_empty() {
            previous = line;
        }
    }
    let missing: Vec<&String> = declared.iter().filter(|k| !found.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "declared in values.schema.json but not in values.yaml: {missing:?}"
    );
    assert!(
        undocumented.is_empty(),
        "keys without a `# --` comment above: {undocumented:?}"
    );
    // And nothing in values.yaml that the schema does not know (helm lint checks that too, but
    // this names the key without helm).
    let values = yaml("helm/nixcache-operator/values.yaml");
    let mut unknown = Vec::new();
    check_known(&values, &schema, "", &mut unknown);
    assert!(
        unknown.is_empty(),
        "values.yaml keys unknown to the schema: {unknown:?}"
    );
}

fn check_known(values: &Value, schema: &Value, prefix: &str, unknown: &mut Vec<String>) {
    let (Some(map), Some(props)) = (values.as_object(), schema["properties"].as_object()) else {
        return;
    };
    for (k, v) in map {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match props.get(k) {
            Some(sub) => check_known(v, sub, &path, unknown),
            None if schema["additionalProperties"] == false => unknown.push(path),
            None => {}
        }
    }
}

// ---------------------------------------------------------------- helm lint and kubernetes-validate

/// `(label, helm args)` for the default values and every example values file.
fn variants() -> Vec<(String, Vec<String>)> {
    let mut v = vec![("default values".to_owned(), Vec::new())];
    for file in tools::ci_values_files() {
        v.push((
            file.file_name().unwrap().to_string_lossy().into_owned(),
            vec!["-f".to_owned(), file.to_string_lossy().into_owned()],
        ));
    }
    assert!(v.len() >= 5, "default plus the four example values files");
    v
}

#[test]
fn helm_lint_strict_passes_for_every_values_file() {
    let Some(helm) = tools::helm() else { return };
    for (label, args) in variants() {
        let out = Command::new(&helm)
            .args(["lint", "--strict", "--namespace", tools::RELEASE_NAMESPACE])
            .arg(tools::chart_dir())
            .args(&args)
            .output()
            .unwrap();
        let text = tools::text(&out);
        assert!(out.status.success(), "helm lint --strict ({label}):\n{text}");
        assert!(text.contains("0 chart(s) failed"), "{label}: {text}");
        assert!(
            !text.contains("[WARNING]") && !text.contains("[ERROR]"),
            "{label}: {text}"
        );
    }
}

/// Runs kubernetes-validate --strict for every supported version over `docs`; returns the kinds
/// it had no schema for.
fn kubernetes_validate(tool: &Path, label: &str, docs: &[Value]) -> BTreeSet<String> {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    for doc in docs {
        writeln!(file, "---\n{}", serde_yaml::to_string(doc).unwrap()).unwrap();
    }
    let mut cmd = Command::new(tool);
    cmd.arg("--strict");
    for v in tools::SUPPORTED_KUBERNETES {
        cmd.args(["--kubernetes-version", v]);
    }
    let out = cmd.arg(file.path()).output().expect("kubernetes-validate runs");
    let text = tools::text(&out);
    let mut unknown = BTreeSet::new();
    let mut passed = 0;
    for line in text.lines() {
        if line.starts_with("INFO") && line.contains(" passed for resource ") {
            passed += 1;
        } else if let Some(rest) = line.split_once("Couldn't find schema for kind ").map(|(_, r)| r) {
            unknown.insert(rest.split_whitespace().next().unwrap().to_owned());
        } else if !line.trim().is_empty() {
            panic!("{label}: kubernetes-validate --strict rejected the rendered chart:\n{text}");
        }
    }
    assert!(out.status.success(), "{label}:\n{text}");
    let known = docs.len()
        - docs
            .iter()
            .filter(|d| unknown.contains(d["kind"].as_str().unwrap()))
            .count();
    assert_eq!(
        passed,
        known * tools::SUPPORTED_KUBERNETES.len(),
        "{label}: every object passed for every version:\n{text}"
    );
    unknown
}

/// Validates ServiceMonitors, PodMonitors and PrometheusRules with prometheus-operator's API
/// types (types, enums, duration patterns); unknown fields are checked by
/// [`service_monitor_selects_the_metrics_service`] and `chart_monitoring.rs`.
fn check_monitoring_objects(label: &str, objects: &[&Value]) {
    let Some((modules, node)) = tools::servicemonitor_checker() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        tools::repo_root().join("operator/tests/chart/servicemonitor/check.mjs"),
        dir.path().join("check.mjs"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&modules, dir.path().join("node_modules")).unwrap();
    let mut child = Command::new(node)
        .arg(dir.path().join("check.mjs"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(objects).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{label}: Prometheus operator object rejected:\n{}",
        tools::text(&out)
    );
    assert_eq!(
        tools::text(&out).lines().filter(|l| l.starts_with("OK ")).count(),
        objects.len(),
        "{}",
        tools::text(&out)
    );
}

/// The NixCache the chart creates against the chart's CRD schema (types, required fields,
/// enums, patterns; unknown fields rejected as `kubectl apply` does).
fn check_nixcaches(label: &str, docs: &[&Value]) {
    let crd = yaml("helm/nixcache-operator/crds/nixcache.yaml");
    let mut schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    let props = schema["properties"].as_object_mut().unwrap();
    props.insert(
        "apiVersion".into(),
        json!({"type": "string", "enum": ["nixcache.dev/v1alpha1"]}),
    );
    props.insert("kind".into(), json!({"type": "string", "enum": ["NixCache"]}));
    props.insert("metadata".into(), json!({"type": "object"}));
    close(&mut schema);
    let validator = jsonschema::draft4::new(&schema).expect("the CRD schema compiles");
    for doc in docs {
        let errors: Vec<String> = validator
            .iter_errors(doc)
            .map(|e| format!("{}: {e}", e.instance_path().as_str()))
            .collect();
        assert!(
            errors.is_empty(),
            "{label}: the chart's NixCache is invalid: {errors:#?}"
        );
        let nc: nixcache_crds::NixCache = serde_json::from_value((*doc).clone())
            .unwrap_or_else(|e| panic!("{label}: the operator cannot read the NixCache: {e}"));
        let name = nc.metadata.name.clone().unwrap();
        assert!(
            name.len() <= 42,
            "names are at most 42 characters (the CRD's CEL rule)"
        );
    }
}

/// Objects with declared properties reject undeclared ones (kubectl's strict field validation).
fn close(schema: &mut Value) {
    if let Some(obj) = schema.as_object_mut() {
        let open = obj.contains_key("additionalProperties")
            || obj.contains_key("x-kubernetes-preserve-unknown-fields");
        if obj.contains_key("properties") && !open {
            obj.insert("additionalProperties".into(), Value::Bool(false));
        }
        obj.values_mut().for_each(close);
    } else if let Some(items) = schema.as_array_mut() {
        items.iter_mut().for_each(close);
    }
}

/// The Prometheus operator's kinds the chart renders.
const MONITORING_KINDS: [&str; 3] = ["ServiceMonitor", "PodMonitor", "PrometheusRule"];

#[test]
fn every_rendered_object_is_valid_for_every_supported_kubernetes_version() {
    let (Some(helm), Some(validate)) = (tools::helm(), tools::kubernetes_validate()) else {
        return;
    };
    let mut kinds = BTreeSet::new();
    for (label, args) in variants() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let docs = render(&helm, &args);
        kinds.extend(docs.iter().map(|d| d["kind"].as_str().unwrap().to_owned()));
        let unknown = kubernetes_validate(&validate, &label, &docs);
        // Only the custom kinds lack a bundled schema, and each is checked here instead.
        let expected: BTreeSet<String> = docs
            .iter()
            .map(|d| d["kind"].as_str().unwrap())
            .filter(|k| MONITORING_KINDS.contains(k) || *k == "NixCache")
            .map(str::to_owned)
            .collect();
        assert_eq!(unknown, expected, "{label}: kinds without a schema");
        let monitoring: Vec<&Value> = MONITORING_KINDS
            .iter()
            .flat_map(|kind| of_kind(&docs, kind))
            .collect();
        if !monitoring.is_empty() {
            check_monitoring_objects(&label, &monitoring);
        }
        let caches = of_kind(&docs, "NixCache");
        if !caches.is_empty() {
            check_nixcaches(&label, &caches);
        }
    }
    let all = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "NixCache",
        "PodDisruptionBudget",
        "PodMonitor",
        "PrometheusRule",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ];
    assert_eq!(
        kinds.iter().map(String::as_str).collect::<Vec<_>>(),
        all,
        "every template was checked"
    );
}

#[test]
fn the_validation_catches_a_misspelt_field() {
    let (Some(helm), Some(validate)) = (tools::helm(), tools::kubernetes_validate()) else {
        return;
    };
    let mut docs = render(&helm, &[]);
    let deployment = docs.iter_mut().find(|d| d["kind"] == "Deployment").unwrap();
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] =
        json!(true);
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    write!(file, "{}", serde_yaml::to_string(deployment).unwrap()).unwrap();
    let out = Command::new(validate)
        .args(["--strict", "--kubernetes-version", tools::TARGET_KUBERNETES])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", tools::text(&out));
    assert!(
        tools::text(&out).contains("readOnlyRootFilesytem"),
        "{}",
        tools::text(&out)
    );
}

// ---------------------------------------------------------------- the values schema

#[test]
fn wrong_values_are_rejected_naming_the_key() {
    let Some(helm) = tools::helm() else { return };
    let cases: &[(&[&str], &[&str])] = &[
        (&["--set", "replicaCount=two"], &["replicaCount", "want integer"]),
        (&["--set", "replicaCuont=2"], &["replicaCuont", "not allowed"]),
        (&["--set", "image.pullPolicy=Sometimes"], &["pullPolicy"]),
        (&["--set", "image.tagg=1.0"], &["tagg"]),
        (
            &["--set-string", "leaderElection.leaseDuration=15 seconds"],
            &["leaseDuration"],
        ),
        (&["--set", "watchNamespace=Not_A_Namespace"], &["watchNamespace"]),
        (&["--set", "serviceMonitor.interval=30 s"], &["interval"]),
        (&["--set", "metrics.port=80800"], &["port"]),
        (&["--set", "nixCache.name=Bad_Name"], &["nixCache", "name"]),
        (
            &["--set", "replicaCount=2", "--set", "leaderElection.enabled=false"],
            &["leaderElection", "enabled"],
        ),
        (
            &[
                "--set",
                "networkPolicy.enabled=true",
                "--set",
                "networkPolicy.egress.enabled=true",
            ],
            &["apiServerCIDRs"],
        ),
        // Not schema rules but template checks, equally at install time:
        (
            &[
                "--set",
                "serviceMonitor.enabled=true",
                "--set",
                "metrics.service.enabled=false",
            ],
            &["metrics.service.enabled"],
        ),
        (
            &[
                "--set",
                "watchNamespace=a",
                "--set",
                "nixCache.enabled=true",
                "--set",
                "nixCache.namespace=b",
            ],
            &["nixCache.namespace", "watchNamespace"],
        ),
        (
            &["--set", "serviceAccount.create=false"],
            &["serviceAccount.name is required"],
        ),
    ];
    for (args, needles) in cases {
        let output = template(&helm, args).expect_err(&format!("{args:?} must be rejected"));
        for needle in *needles {
            assert!(
                output.contains(needle),
                "{args:?}: helm's message does not name {needle:?}:\n{output}"
            );
        }
    }
    // The same at install (client-side dry run: no cluster needed).
    let out = Command::new(&helm)
        .args(["install", "x"])
        .arg(tools::chart_dir())
        .args(["--dry-run=client", "--set", "replicaCount=two"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        tools::text(&out).contains("replicaCount"),
        "{}",
        tools::text(&out)
    );
}

// ---------------------------------------------------------------- what the Deployment passes

/// The `env = "…"` names the operator binary reads (operator/src/main.rs).
fn operator_env_names() -> BTreeSet<String> {
    let main = read("operator/src/main.rs");
    main.split("env = \"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect()
}

#[test]
fn the_deployment_passes_only_settings_the_operator_reads() {
    let Some(helm) = tools::helm() else { return };
    let known = operator_env_names();
    assert!(known.contains("NIXCACHE_OPERATOR_PROXY_IMAGE") && known.contains("POD_NAMESPACE"));
    for (label, args) in variants() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let docs = render(&helm, &args);
        let deployment = one(&docs, "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        for e in container["env"].as_array().unwrap() {
            let name = e["name"].as_str().unwrap();
            assert!(
                name == "RUST_LOG" || known.contains(name),
                "{label}: env {name} is not read by the operator (operator/src/main.rs)"
            );
        }
        // Listen address, port, probes and Service agree.
        let port = container["ports"][0]["containerPort"].as_i64().unwrap();
        assert_eq!(
            env(deployment, "NIXCACHE_OPERATOR_LISTEN"),
            Some(format!("0.0.0.0:{port}").as_str())
        );
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(
            container["livenessProbe"]["httpGet"]["port"],
            container["ports"][0]["name"]
        );
        let service = one(&docs, "Service");
        assert_eq!(
            service["spec"]["ports"][0]["targetPort"],
            container["ports"][0]["name"]
        );
        for (k, v) in service["spec"]["selector"].as_object().unwrap() {
            assert_eq!(
                &pod_labels(deployment)[k],
                v,
                "{label}: the Service selects the operator pods"
            );
        }
        // Downward API for the Lease and events.
        for (name, field) in [
            ("POD_NAMESPACE", "metadata.namespace"),
            ("POD_NAME", "metadata.name"),
        ] {
            let e = container["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == name)
                .unwrap();
            assert_eq!(e["valueFrom"]["fieldRef"]["fieldPath"], field);
        }
        // Hardened by default.
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], 65532);
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
        let sc = &container["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        assert!(container["resources"]["requests"]["memory"].is_string());
        assert!(container["resources"]["limits"]["memory"].is_string());
        // Leader election: on exactly when more than one replica runs (nothing sets it otherwise),
        // and then the strategy may overlap pods; without it, never.
        let replicas = deployment["spec"]["replicas"].as_i64().unwrap();
        let leader = env(deployment, "NIXCACHE_OPERATOR_LEADER_ELECTION");
        assert_eq!(
            leader,
            Some(if replicas > 1 { "true" } else { "false" }),
            "{label}"
        );
        let strategy = deployment["spec"]["strategy"]["type"].as_str().unwrap();
        assert_eq!(
            strategy,
            if replicas > 1 { "RollingUpdate" } else { "Recreate" },
            "{label}"
        );
        assert_eq!(
            of_kind(&docs, "PodDisruptionBudget").len(),
            usize::from(replicas > 1),
            "{label}"
        );
        // watchNamespace reaches the operator.
        let values_ns = args
            .iter()
            .find(|a| a.ends_with("watch-namespace-values.yaml"))
            .map(|_| "nix-caches");
        assert_eq!(
            env(deployment, "NIXCACHE_OPERATOR_WATCH_NAMESPACE"),
            values_ns,
            "{label}"
        );
    }
}

fn pod_labels(deployment: &Value) -> &serde_json::Map<String, Value> {
    deployment["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap()
}

#[test]
fn the_default_proxy_image_is_the_operators_version_and_overridable() {
    let Some(helm) = tools::helm() else { return };
    let docs = render(&helm, &[]);
    let deployment = one(&docs, "Deployment");
    let version = nixcache_operator::config::VERSION;
    assert_eq!(
        env(deployment, "NIXCACHE_OPERATOR_PROXY_IMAGE"),
        Some(format!("ghcr.io/nixcache/nixcache:{version}").as_str())
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("ghcr.io/nixcache/nixcache-operator:{version}")
    );
    let docs = render(
        &helm,
        &[
            "--set",
            "proxyImage.repository=r.example/n",
            "--set",
            "proxyImage.digest=",
        ],
    );
    // An empty digest keeps the tag.
    assert_eq!(
        env(one(&docs, "Deployment"), "NIXCACHE_OPERATOR_PROXY_IMAGE"),
        Some(format!("r.example/n:{version}").as_str())
    );
    let digest = format!("sha256:{}", "ab".repeat(32));
    let docs = render(&helm, &["--set", &format!("proxyImage.digest={digest}")]);
    let image = env(one(&docs, "Deployment"), "NIXCACHE_OPERATOR_PROXY_IMAGE")
        .unwrap()
        .to_owned();
    assert_eq!(image, format!("ghcr.io/nixcache/nixcache@{digest}"));
    // The operator uses a reference with a digest as it is.
    assert_eq!(nixcache_operator::config::default_image(&image), image);
}

#[test]
fn service_monitor_selects_the_metrics_service() {
    let Some(helm) = tools::helm() else { return };
    let file = tools::chart_dir().join("ci/monitoring-values.yaml");
    let docs = render(&helm, &["-f", file.to_str().unwrap()]);
    let monitor = one(&docs, "ServiceMonitor");
    let service = one(&docs, "Service");
    let spec = monitor["spec"].as_object().unwrap();
    assert_eq!(
        spec.keys().map(String::as_str).collect::<Vec<_>>(),
        ["endpoints", "namespaceSelector", "selector"],
        "no field the ServiceMonitor type lacks"
    );
    let endpoint = monitor["spec"]["endpoints"][0].as_object().unwrap();
    assert_eq!(
        endpoint.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "honorLabels",
            "interval",
            "path",
            "port",
            "scheme",
            "scrapeTimeout"
        ]
    );
    assert_eq!(monitor["metadata"]["labels"]["release"], "kube-prometheus-stack");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "the ServiceMonitor selects the metrics Service"
        );
    }
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        json!([tools::RELEASE_NAMESPACE])
    );
    assert_eq!(endpoint["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(endpoint["path"], "/metrics");
    // The NetworkPolicy admits the scrape (and the probes) on that port only.
    let policy = one(&docs, "NetworkPolicy");
    assert_eq!(
        policy["spec"]["ingress"][0]["ports"],
        json!([{"port": "http-metrics", "protocol": "TCP"}])
    );
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    let to = &policy["spec"]["egress"][0]["to"];
    assert_eq!(
        to,
        &json!([{"ipBlock": {"cidr": "10.96.0.1/32"}}, {"ipBlock": {"cidr": "172.18.0.2/32"}}])
    );
}

#[test]
fn notes_tell_how_to_create_a_nixcache_and_configure_nix() {
    let Some(helm) = tools::helm() else { return };
    for (args, ns, name) in [
        (vec![], tools::RELEASE_NAMESPACE, "nixcache"),
        (vec!["--set", "watchNamespace=caches"], "caches", "nixcache"),
        (
            vec!["--set", "nixCache.enabled=true", "--set", "nixCache.name=c1"],
            tools::RELEASE_NAMESPACE,
            "c1",
        ),
    ] {
        // `helm template` does not render NOTES.txt; a client-side dry-run install does.
        let notes = notes_via_install(&helm, &args);
        for needle in [
            format!("kubectl -n {ns} get nixcache {name} -o jsonpath='{{.status.publicKey}}"),
            format!("substituters = http://{name}.{ns}.svc:8501"),
            "trusted-public-keys = ".to_owned(),
            format!("kubectl -n {ns} wait nixcache/{name} --for=condition=Ready"),
        ] {
            assert!(
                notes.contains(&needle),
                "{args:?}: NOTES lack {needle:?}:\n{notes}"
            );
        }
        assert_eq!(
            notes.contains("kind: NixCache"),
            !args.contains(&"nixCache.enabled=true")
        );
    }
}

fn notes_via_install(helm: &Path, args: &[&str]) -> String {
    let out = Command::new(helm)
        .args(["install", tools::RELEASE])
        .arg(tools::chart_dir())
        .args(["--namespace", tools::RELEASE_NAMESPACE, "--dry-run=client"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", tools::text(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_once("NOTES:")
        .expect("helm prints the notes")
        .1
        .to_owned()
}

// ---------------------------------------------------------------- the kind e2e script

#[test]
fn the_kind_script_is_shellcheck_clean() {
    let Some(shellcheck) = tools::shellcheck() else {
        return;
    };
    let out = Command::new(shellcheck)
        .args(["-S", "warning", "-x"])
        .current_dir(tools::repo_root())
        .args([
            "e2e/kind/run.sh",
            "e2e/kind/build-upstream.sh",
            "e2e/kind/client.sh",
            ".ci/chart-tools.sh",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shellcheck -S warning:\n{}",
        tools::text(&out)
    );
}

/// Runs the kind script with `path` as PATH (so none of docker/kind/kubectl/helm is found unless
/// placed there) and `required` as E2E_REQUIRED.
fn run_kind_script(path: &Path, required: bool) -> (i32, String) {
    let out = Command::new("/bin/bash")
        .arg(tools::repo_root().join("e2e/kind/run.sh"))
        .env_clear()
        .env("PATH", path)
        .env("HOME", path)
        .env("E2E_REQUIRED", if required { "1" } else { "0" })
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), tools::text(&out))
}

#[test]
fn the_kind_script_skips_without_its_tools_unless_required() {
    let empty = tempfile::tempdir().unwrap();
    let (code, out) = run_kind_script(empty.path(), false);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("SKIP e2e: docker not found"), "{out}");
    let (code, out) = run_kind_script(empty.path(), true);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("docker not found") && out.contains("E2E_REQUIRED=1"),
        "{out}"
    );

    // A docker client without an engine (as on CI), and every other tool present.
    let bin = tempfile::tempdir().unwrap();
    for tool in ["docker", "kind", "kubectl", "helm"] {
        let path = bin.path().join(tool);
        let script = if tool == "docker" {
            "#!/bin/sh\n[ \"$1\" = info ] && { echo 'Cannot connect to the Docker daemon' >&2; exit 1; }\nexit 0\n"
        } else {
            "#!/bin/sh\nexit 0\n"
        };
        std::fs::write(&path, script).unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).unwrap();
    }
    let (code, out) = run_kind_script(bin.path(), false);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("SKIP e2e: no Docker engine"), "{out}");
    // kind missing (docker answers).
    std::fs::write(bin.path().join("docker"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::remove_file(bin.path().join("kind")).unwrap();
    let (code, out) = run_kind_script(bin.path(), true);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("kind not found"), "{out}");
}

/// The placeholders run.sh fills in each manifest (`render "$HERE/manifests/FILE" KEY=… …`).
fn kind_script_placeholders() -> Vec<(String, BTreeSet<String>)> {
    let script = read("e2e/kind/run.sh").replace("\\\n", " ");
    script
        .split("render \"$HERE/manifests/")
        .skip(1)
        .map(|call| {
            let (file, rest) = call.split_once('"').unwrap();
            let line = rest.split(['|', '\n']).next().unwrap();
            let keys = line
                .split_whitespace()
                .filter_map(|w| w.split_once('=').map(|(k, _)| k.to_owned()))
                .collect();
            (file.to_owned(), keys)
        })
        .collect()
}

#[test]
fn the_kind_manifests_are_valid_with_every_placeholder_filled() {
    let calls = kind_script_placeholders();
    let files: BTreeSet<&str> = calls.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        files.into_iter().collect::<Vec<_>>(),
        ["client-job.yaml", "infra.yaml", "nixcache.yaml", "upstream.yaml"]
    );
    let mut docs = Vec::new();
    for (file, keys) in &calls {
        let mut text = read(&format!("e2e/kind/manifests/{file}"));
        let used: BTreeSet<String> = text.split("__").skip(1).step_by(2).map(str::to_owned).collect();
        assert_eq!(
            &used, keys,
            "{file}: placeholders in the manifest vs. filled by run.sh"
        );
        for key in keys {
            let value = match key.as_str() {
                "BIG_MIB" | "RATE_MIB" => "16",
                "UPSTREAM_KEY" | "CACHE_KEY" => "k-1:2mZpE5PEA/v3Ce3VchoV53LmP6QIs6MKxbrQSCmZx5s=",
                "CACHE_URL" => "http://e2e.nixcache-e2e.svc:8501",
                "TARGET" => "/nix/store/00000000000000000000000000000000-x",
                "NAME" => "client-x",
                _ => "registry.example/image:tag",
            };
            text = text.replace(&format!("__{key}__"), value);
        }
        docs.extend(tools::documents(&text));
    }
    let caches: Vec<&Value> = of_kind(&docs, "NixCache");
    assert_eq!(caches.len(), 1);
    check_nixcaches("e2e/kind/manifests/nixcache.yaml", &caches);
    assert_eq!(
        caches[0]["spec"]["replicas"], 3,
        "the scenario starts with three replicas"
    );
    let Some(validate) = tools::kubernetes_validate() else {
        return;
    };
    let others: Vec<Value> = docs.iter().filter(|d| d["kind"] != "NixCache").cloned().collect();
    let unknown = kubernetes_validate(&validate, "e2e/kind/manifests", &others);
    assert!(unknown.is_empty(), "{unknown:?}");
}
