//! The chart's monitoring pieces: the dashboard (`dashboards/nixcache.json`), the alerts
//! (`alerts/nixcache.rules.yaml`) and the PodMonitor that gives both their labels.
//! - Without tools: every metric a panel or an alert names is one the proxy or the operator
//!   exports (its `# TYPE` line, with the suffix its type adds), and every panel groups by labels
//!   the PodMonitor sets.
//! - With helm: the rendered PodMonitor selects the pods the operator labels, the PrometheusRule
//!   carries the rule file as it is (runbook links pointed where the values say), the ConfigMap
//!   the dashboard as it is.
//! - With promtool (`.ci/prometheus-tools.sh`): `promtool check rules` on the file and on the
//!   rendered PrometheusRule, and `promtool test rules` on `alerts/nixcache.rules.test.yaml`.
//!
//! That every panel's query returns data from a real Prometheus scraping real replicas is
//! `e2e/tests/kube/observability.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "chart/tools.rs"]
mod tools;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use tools::{one, render};

const RULES: &str = "helm/nixcache-operator/alerts/nixcache.rules.yaml";
const DASHBOARD: &str = "helm/nixcache-operator/dashboards/nixcache.json";
const DEFAULT_RUNBOOKS: &str = "https://example.invalid/nixcache/helm/nixcache-operator/README.md";

fn read(relative: &str) -> String {
    std::fs::read_to_string(tools::repo_root().join(relative)).unwrap()
}

fn rules() -> Value {
    serde_yaml::from_str(&read(RULES)).unwrap()
}

/// Every PromQL expression of the dashboard's panels and of the alerts.
fn expressions() -> Vec<String> {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 30, "the dashboard's queries");
    for group in rules()["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            exprs.push(rule["expr"].as_str().unwrap().to_owned());
        }
    }
    exprs
}

/// The series names the proxy's registry may expose, and the operator's (its families given a
/// child each, as an empty family writes nothing), with the suffixes their types add.
fn exported_series() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = nixcache::metrics::Metrics::new()
        .series_names()
        .iter()
        .cloned()
        .collect();
    let operator = nixcache_operator::metrics::Metrics::default();
    operator.watch_failed("nixcaches");
    let error = nixcache_operator::error::ErrorKind::KubeConflict;
    operator
        .failures
        .get_or_create(&nixcache_operator::metrics::ErrorLabels { error })
        .inc();
    let counts = nixcache_operator::metrics::ReplicaCounts {
        namespace: "ci".into(),
        nixcache: "cache".into(),
        desired: 2,
        ready: 1,
        gc: true,
    };
    operator.set_replicas(&[counts]);
    operator.status_polled(nixcache_operator::cache_status::client::PollResult::Ok);
    for line in operator.encode().lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

#[test]
fn every_metric_the_dashboard_and_alerts_name_is_exported() {
    let exported = exported_series();
    assert!(exported.contains("nixcache_upkeep_runs_total"), "{exported:?}");
    let mut unknown = BTreeSet::new();
    for expr in expressions() {
        let names = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("nixcache_"));
        unknown.extend(names.filter(|n| !exported.contains(*n)).map(str::to_owned));
    }
    assert!(unknown.is_empty(), "named but not exported: {unknown:?}");
}

#[test]
fn every_cache_query_is_scoped_by_the_labels_the_podmonitor_sets() {
    let podmonitor = read("helm/nixcache-operator/templates/podmonitor.yaml");
    assert!(podmonitor.contains("targetLabel: nixcache"), "{podmonitor}");
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    let targets = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default());
    for target in targets {
        let expr = target["expr"].as_str().unwrap();
        // The operator's series carry neither label: it serves every namespace.
        if expr.contains("nixcache_operator_") {
            continue;
        }
        let scoped = expr
            .matches(r#"namespace=~"$namespace", nixcache=~"$nixcache""#)
            .count();
        let selectors = expr.matches("nixcache_").count();
        assert_eq!(
            scoped, selectors,
            "every series selector scoped to the chosen caches: {expr}"
        );
    }
}

#[test]
fn the_monitoring_objects_carry_the_repo_files() {
    let Some(helm) = tools::helm() else { return };
    let file = tools::chart_dir().join("ci/monitoring-values.yaml");
    let docs = render(&helm, &["-f", file.to_str().unwrap()]);

    let monitor = one(&docs, "PodMonitor");
    let nc = nixcache_operator::fixtures::single("cache");
    let pod_labels = nixcache_operator::render::selector_labels(&nc);
    for (k, v) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            pod_labels.get(k).map(String::as_str),
            v.as_str(),
            "selects the replicas: {k}"
        );
    }
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        serde_json::json!(["ci", "builds"])
    );
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "http", "the replicas' container port name");
    assert_eq!(endpoint["relabelings"][0]["targetLabel"], "nixcache");
    assert_eq!(monitor["metadata"]["labels"]["release"], "kube-prometheus-stack");

    let rule = one(&docs, "PrometheusRule");
    let wiki = read(RULES).replace(DEFAULT_RUNBOOKS, "https://wiki.example.com/nixcache/runbooks");
    let expected: Value = serde_yaml::from_str(&wiki).unwrap();
    assert_eq!(
        rule["spec"], expected,
        "the rule file, runbooks pointed at the wiki"
    );

    let dashboard = one(&docs, "ConfigMap");
    assert_eq!(dashboard["metadata"]["namespace"], "monitoring");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(dashboard["metadata"]["annotations"]["grafana_folder"], "nixcache");
    let json = dashboard["data"]["nixcache.json"].as_str().unwrap();
    assert_eq!(json.trim_end(), read(DASHBOARD).trim_end());
}

/// `promtool`, or `None` after a SKIP line (a failure where the chart tools are required).
fn promtool() -> Option<PathBuf> {
    let path = std::env::var_os("NIXCACHE_TEST_PROMTOOL")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/nixcache-tools/bin/promtool"))
        })
        .filter(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if path.is_none() {
        let required =
            tools::required() || std::env::var("NIXCACHE_TEST_REQUIRE_PROMETHEUS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "promtool is required; `bash .ci/prometheus-tools.sh` installs it"
        );
        eprintln!("SKIP: promtool not found (run `bash .ci/prometheus-tools.sh`)");
    }
    path
}

fn promtool_passes(promtool: &PathBuf, args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = tools::text(&out);
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn promtool_checks_and_unit_tests_every_alert() {
    let Some(promtool) = promtool() else { return };
    let root = tools::repo_root();
    let text = promtool_passes(&promtool, &["check", "rules", RULES], &root);
    let count = read(RULES).matches("- alert:").count();
    assert!(text.contains(&format!("SUCCESS: {count} rules found")), "{text}");

    // Every alert has a unit test in which it fires.
    let tests: Value = serde_yaml::from_str(&read("operator/tests/alerts/nixcache.rules.test.yaml")).unwrap();
    let fired: BTreeSet<&str> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .filter(|t| t["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()))
        .map(|t| t["alertname"].as_str().unwrap())
        .collect();
    for alert in read(RULES)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(fired.contains(alert), "no unit test in which {alert} fires");
    }
    let dir = root.join("operator/tests/alerts");
    let text = promtool_passes(&promtool, &["test", "rules", "nixcache.rules.test.yaml"], &dir);
    assert!(text.contains("SUCCESS"), "{text}");

    // What the chart renders is what promtool checked.
    if let Some(helm) = tools::helm() {
        let docs = render(&helm, &["--set", "prometheusRule.enabled=true"]);
        let spec = &one(&docs, "PrometheusRule")["spec"];
        let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::fs::write(file.path(), serde_yaml::to_string(spec).unwrap()).unwrap();
        let path = file.path().to_str().unwrap();
        let text = promtool_passes(&promtool, &["check", "rules", path], &root);
        assert!(text.contains(&format!("SUCCESS: {count} rules found")), "{text}");
    }
}
