//! The dashboard and the alerts against real data: a NixCache's replicas on the real API server
//! serve a real Nix client, `nixcache gc` and `nixcache fsck` run as the CronJobs run them (their
//! own processes against the shared database and bucket), the operator reads every replica's
//! `/status` into the NixCache's `status.cache`, and a real Prometheus scrapes the
//! replicas, relabelled as the chart's PodMonitor asks, and the operator. Debian's Prometheus is
//! built without Kubernetes discovery, so the test stands in for it: it lists the pods from the
//! API server and hands Prometheus the `__meta_kubernetes_pod_*` labels that discovery would
//! (file discovery), which the PodMonitor's relabelling then turns into `namespace`, `pod` and
//! `nixcache`. Then every query of every dashboard panel must return data (none may
//! show "No data" for a typo or a renamed metric), and every alert rule must evaluate cleanly.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use nixcache_e2e::kube::bins::nixcache_bin;
use nixcache_e2e::kube::wait;
use nixcache_e2e::prometheus::{self, Prometheus};
use nixcache_e2e::{fetch, FetchOptions};
use nixcache_testsupport::s3::{ACCESS_KEY, SECRET_KEY};
use serde_json::Value;

use crate::world::World;
use crate::ONE_AT_A_TIME;

const NAME: &str = "watched";
const REPLICAS: i64 = 2;

fn repo_file(relative: &str) -> Result<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    std::fs::read_to_string(&path).with_context(|| path.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dashboard_panel_and_alert_works_on_real_data() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(binary) = prometheus::tool("prometheus") else {
        return Ok(());
    };
    let Some(mut world) = World::start("kube-obs").await? else {
        return Ok(());
    };
    // status.cache every 3 s rather than every minute, to read it within the test.
    world.operator_args = vec!["--cache-status-interval".into(), "3s".into()];
    world.start_operator("operator-a", None).await?;
    world.ns.apply(&world.nixcache_yaml(NAME, REPLICAS as i32, ""))?;
    let nc = world.wait_ready(NAME, REPLICAS, Duration::from_secs(240)).await?;
    let public_key = nc["status"]["publicKey"]
        .as_str()
        .context("no publicKey")?
        .to_owned();

    run_upkeep(&world, "gc", &["--max-size", "10G"]).await?;
    run_upkeep(&world, "fsck", &[]).await?;
    // One upstream lookup before Prometheus starts: a rate (and so a latency quantile) needs a
    // series that already existed when the client's requests came.
    let service = world.service(NAME).await?;
    let unknown = format!("{}/{}.narinfo", service.url, "0".repeat(32));
    let status = reqwest::get(&unknown).await?.status();
    ensure!(status == reqwest::StatusCode::NOT_FOUND, "{unknown}: {status}");

    let (prometheus, _files) = start_prometheus(&binary, &world).await?;
    scraped(&prometheus, &world)
        .await
        .with_context(|| prometheus.log())?;
    // While Prometheus watches: a client that fills the cache from the upstream, then one served
    // from it.
    for _ in 0..2 {
        fetch(
            &service.url,
            &public_key,
            &[&world.cache.root],
            &FetchOptions::default(),
        )
        .await?
        .expect_whole_closure(&world.cache)?;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;

    // The alert on replicas not ready reads the operator's count under the NixCache's namespace.
    let ready = format!(
        "nixcache_operator_replicas{{namespace=\"{}\", nixcache=\"{NAME}\", state=\"ready\"}} == {REPLICAS}",
        world.ns.name
    );
    ensure!(!prometheus.query(&ready).await?.is_empty(), "{ready}: no answer");
    let report = every_panel_has_data(&prometheus, &world.ns.name).await?;
    eprintln!("{report}");
    every_rule_evaluates(&prometheus).await?;
    the_status_shows_the_cache(&world).await
}

/// The operator reads every replica's `/status` into `status.cache`, and `kubectl get` shows it.
async fn the_status_shows_the_cache(world: &World) -> Result<()> {
    let cache = wait::until(
        "status.cache from both replicas",
        Duration::from_secs(60),
        || async {
            let cache = world.nixcache(NAME)?["status"]["cache"].clone();
            let complete = cache["replicasAnswered"] == REPLICAS
                && cache["lastGc"]["result"] == "ok"
                && cache["lastFsck"]["result"] == "clean"
                && cache["fetchedBytesLastHour"].as_u64().is_some_and(|b| b > 0)
                && cache["paths"].as_u64().is_some_and(|p| p > 0);
            Ok(complete.then_some(cache))
        },
    )
    .await
    .with_context(|| world.describe(NAME))?;
    ensure!(cache["upstreamHealth"] == "1/1 up", "{cache:#}");
    ensure!(
        cache["hitRatioLastHour"]
            .as_str()
            .is_some_and(|r| r.ends_with('%')),
        "{cache:#}"
    );
    ensure!(
        cache["size"].as_str().is_some_and(|s| s.ends_with("/ 10 GiB")),
        "{cache:#}"
    );
    let nix_conf = world.nixcache(NAME)?["status"]["nixConf"].clone();
    ensure!(
        nix_conf
            .as_str()
            .is_some_and(|c| c.contains("trusted-public-keys = ")),
        "{nix_conf}"
    );
    let table = world.ns.kubectl(&["get", "nixcache", NAME])?;
    eprintln!("[obs] kubectl get nixcache:\n{table}");
    let header = table.lines().next().unwrap_or_default();
    for column in ["SIZE", "HIT RATIO", "UPSTREAMS"] {
        ensure!(header.contains(column), "no {column} column: {table}");
    }
    ensure!(table.contains("1/1 up"), "{table}");
    Ok(())
}

/// A Prometheus over the replicas and the operator, with the alert rules; the files it reads are
/// kept as long as the returned directory.
async fn start_prometheus(
    binary: &std::path::Path,
    world: &World,
) -> Result<(Prometheus, tempfile::TempDir)> {
    let files = tempfile::tempdir()?;
    let (rules, pods) = (files.path().join("rules.yaml"), files.path().join("pods.json"));
    std::fs::write(
        &rules,
        repo_file("helm/nixcache-operator/alerts/nixcache.rules.yaml")?,
    )?;
    std::fs::write(&pods, discovered_pods(world)?.to_string())?;
    let config = scrape_config(world, &pods.display().to_string(), &rules.display().to_string());
    Ok((Prometheus::start(binary, &config).await?, files))
}

/// `nixcache gc`/`fsck` as the CronJob runs it: its own process on the NixCache's database and
/// bucket, which then exits (the replicas report what it recorded).
async fn run_upkeep(world: &World, command: &str, extra: &[&str]) -> Result<()> {
    let bin = tokio::task::spawn_blocking(nixcache_bin).await??;
    let endpoint = world.s3.endpoint();
    let out = tokio::process::Command::new(bin)
        .arg(command)
        .args(extra)
        .args([
            "--storage",
            "s3",
            "--s3-bucket",
            &world.bucket,
            "--s3-endpoint",
            &endpoint,
        ])
        .args(["--s3-region", "us-east-1", "--s3-prefix", NAME, "--s3-path-style"])
        .env("NIXCACHE_DATABASE_URL", world._db.url())
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .output()
        .await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "nixcache {command} failed: {text}");
    eprintln!(
        "[obs] nixcache {command}: {}",
        text.lines().last().unwrap_or_default()
    );
    Ok(())
}

/// What Kubernetes pod discovery makes of the namespace's pods: one target per container port,
/// with the `__meta_kubernetes_*` labels it sets (file discovery's JSON).
fn discovered_pods(world: &World) -> Result<Value> {
    let pods = world.ns.get_json(&["pods"])?.unwrap_or_default();
    let mut targets = Vec::new();
    for pod in pods["items"].as_array().into_iter().flatten() {
        let (Some(ip), Some(name)) = (pod["status"]["podIP"].as_str(), pod["metadata"]["name"].as_str())
        else {
            continue;
        };
        let mut labels = serde_json::Map::new();
        labels.insert("__meta_kubernetes_namespace".into(), world.ns.name.clone().into());
        labels.insert("__meta_kubernetes_pod_name".into(), name.into());
        for (key, value) in pod["metadata"]["labels"].as_object().into_iter().flatten() {
            let key: String = key
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            labels.insert(format!("__meta_kubernetes_pod_label_{key}"), value.clone());
        }
        for container in pod["spec"]["containers"].as_array().into_iter().flatten() {
            for port in container["ports"].as_array().into_iter().flatten() {
                let mut labels = labels.clone();
                labels.insert(
                    "__meta_kubernetes_pod_container_port_name".into(),
                    port["name"].clone(),
                );
                let address = format!("{ip}:{}", port["containerPort"]);
                targets.push(serde_json::json!({"targets": [address], "labels": labels}));
            }
        }
    }
    Ok(Value::Array(targets))
}

/// The replicas through the relabelling the chart's PodMonitor asks the Prometheus operator for
/// (keep the proxy pods' `http` port; `nixcache` from the instance label, beside `namespace` and
/// `pod`), the operator's admin port, and the alert rules.
fn scrape_config(world: &World, pods_file: &str, rules: &str) -> String {
    let operator = world.operators[0].admin;
    format!(
        r#"global: {{scrape_interval: 2s, evaluation_interval: 2s}}
rule_files: ["{rules}"]
scrape_configs:
  - job_name: nixcache
    file_sd_configs:
      - files: ["{pods_file}"]
        refresh_interval: 5s
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name, __meta_kubernetes_pod_label_app_kubernetes_io_component]
        regex: nixcache;proxy
        action: keep
      - source_labels: [__meta_kubernetes_pod_container_port_name]
        regex: http
        action: keep
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_instance]
        target_label: nixcache
        action: replace
  - job_name: nixcache-operator
    # As the chart's ServiceMonitor: the operator's own namespace on the target, and the
    # per-NixCache series keeping theirs (honorLabels).
    honor_labels: true
    static_configs:
      - targets: ["{operator}"]
        labels: {{pod: operator-a, namespace: nixcache-system}}
"#
    )
}

/// Every replica and the operator are scraped, and the replicas report the recorded GC and fsck.
async fn scraped(prometheus: &Prometheus, world: &World) -> Result<()> {
    let pods = world.running_pods(NAME)?;
    let all_up = wait::until(
        "every replica and the operator scraped",
        Duration::from_secs(90),
        || async {
            let targets = prometheus.targets().await?;
            let up = targets.iter().filter(|t| t["health"] == "up").count();
            Ok((up == pods.len() + 1).then_some(()))
        },
    )
    .await;
    if all_up.is_err() {
        let targets = prometheus.targets().await.unwrap_or_default();
        return all_up.with_context(|| format!("targets: {targets:#?}"));
    }
    // The replicas read the database's records every minute.
    let recorded = format!(
        "count(nixcache_upkeep_runs_total{{nixcache=\"{NAME}\"}}) == {}",
        2 * pods.len()
    );
    wait::until(
        "the recorded gc and fsck on every replica",
        Duration::from_secs(90),
        || async { Ok((!prometheus.query(&recorded).await?.is_empty()).then_some(())) },
    )
    .await
}

/// Runs every target of every panel over the last five minutes with the dashboard's variables
/// set as a user picking this NixCache would; fails on any answer without a number to draw
/// (empty, or NaN only). Returns a table of the panels, their queries and the latest number of
/// the first series that has one.
async fn every_panel_has_data(prometheus: &Prometheus, namespace: &str) -> Result<String> {
    let dashboard: Value =
        serde_json::from_str(&repo_file("helm/nixcache-operator/dashboards/nixcache.json")?)?;
    let panels = dashboard["panels"].as_array().context("no panels")?;
    let mut table = String::from("| panel | query | latest value |\n|---|---|---|\n");
    let mut empty = Vec::new();
    let mut queries = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().context("a target without expr")?;
            let query = expr
                .replace("$namespace", namespace)
                .replace("$nixcache", NAME)
                .replace("$__rate_interval", "1m");
            // The last five minutes, as the panel draws them (stat panels reduce the same).
            let series = prometheus
                .query_range(&query, 5, 5)
                .await
                .with_context(|| query.clone())?;
            queries += 1;
            let title = panel["title"].as_str().unwrap_or_default();
            // A series of NaN only (a quantile of no requests) draws nothing either.
            match series.iter().find_map(|(_, values)| values.last()) {
                None => empty.push(format!("{title}: {query} -> {series:?}")),
                Some(value) => table.push_str(&format!(
                    "| {title} | `{}` | {value} |\n",
                    expr.replace('|', "\\|")
                )),
            }
        }
    }
    ensure!(
        empty.is_empty(),
        "panel queries without data:\n{}",
        empty.join("\n")
    );
    ensure!(
        queries >= 30,
        "only {queries} queries: the dashboard lost panels?"
    );
    Ok(table)
}

/// Every alert rule is loaded and evaluates without error on the real series.
async fn every_rule_evaluates(prometheus: &Prometheus) -> Result<()> {
    let expected = repo_file("helm/nixcache-operator/alerts/nixcache.rules.yaml")?
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    let rules = wait::until("every rule evaluated", Duration::from_secs(30), || async {
        let data = prometheus.api("rules", &[]).await?;
        let rules: Vec<Value> = data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules.iter().all(|r| {
            r["lastEvaluation"]
                .as_str()
                .is_some_and(|t| !t.starts_with("0001"))
        });
        Ok((rules.len() == expected && evaluated).then_some(rules))
    })
    .await?;
    let bad: Vec<String> = rules
        .iter()
        .filter(|r| r["health"] != "ok")
        .map(|r| format!("{}: {} {}", r["name"], r["health"], r["lastError"]))
        .collect();
    ensure!(bad.is_empty(), "rules that do not evaluate: {bad:#?}");
    // The cache is healthy: an alert pending or firing now would be a false alarm.
    let raised: Vec<String> = rules
        .iter()
        .filter(|r| r["state"] != "inactive")
        .map(|r| format!("{}: {} {}", r["name"], r["state"], r["alerts"]))
        .collect();
    ensure!(raised.is_empty(), "alerts raised on a healthy cache: {raised:#?}");
    eprintln!("[obs] {} alert rules evaluate on real data", rules.len());
    Ok(())
}
