//! A real Prometheus (Debian bookworm's 2.42, which `.ci/prometheus-tools.sh` unpacks into
//! `~/.cache/nixcache-tools`) for the dashboard and alert tests: started on loopback with a
//! scrape configuration of the test's, and asked with its HTTP API as Grafana would.
//!
//! Found at `NIXCACHE_TEST_PROMETHEUS`, in the tool dir, then on `PATH`. Missing, a test prints
//! a SKIP line and passes, unless `CI`, `NIXCACHE_E2E_REQUIRED=1` or
//! `NIXCACHE_TEST_REQUIRE_PROMETHEUS=1` (`.ci/run`) is set.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::kube::operator::free_port;
use crate::kube::wait;

/// `prometheus` or `promtool` from the tool dir (or `NIXCACHE_TEST_<NAME>`, or `PATH`), if it
/// runs; otherwise `None` after a SKIP line (a failure under CI).
pub fn tool(name: &str) -> Option<PathBuf> {
    let var = format!("NIXCACHE_TEST_{}", name.to_uppercase());
    let candidates = std::env::var_os(&var)
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/nixcache-tools/bin").join(name)))
        .chain([PathBuf::from(name)]);
    let found = candidates.into_iter().find(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        let message = format!("SKIP: {name} not found (run `bash .ci/prometheus-tools.sh`)");
        let required = crate::e2e_required()
            || std::env::var("NIXCACHE_TEST_REQUIRE_PROMETHEUS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{message}; required here (CI or NIXCACHE_TEST_REQUIRE_PROMETHEUS=1)"
        );
        eprintln!("{message}");
    }
    found
}

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    pub url: String,
    child: Child,
    pub log_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `binary` with `config` (a prometheus.yml) and waits until it is ready.
    pub async fn start(binary: &Path, config: &str) -> Result<Prometheus> {
        let dir = tempfile::tempdir()?;
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config)?;
        let port = free_port()?;
        let log_file = dir.path().join("prometheus.log");
        let log = std::fs::File::create(&log_file)?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let prometheus = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            child,
            log_file,
            _dir: dir,
        };
        let ready = format!("{}/-/ready", prometheus.url);
        wait::until("Prometheus ready", Duration::from_secs(60), || async {
            Ok(reqwest::get(&ready)
                .await
                .is_ok_and(|r| r.status().is_success())
                .then_some(()))
        })
        .await
        .with_context(|| prometheus.log())?;
        Ok(prometheus)
    }

    /// The end of its log.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `GET /api/v1/<path>` with `params`: its `data`.
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/{path}", self.url))
            .query(params)
            .send()
            .await?;
        let body: Value = serde_json::from_slice(&response.bytes().await?)?;
        if body["status"] != "success" {
            bail!("Prometheus {path} {params:?}: {body}");
        }
        Ok(body["data"].clone())
    }

    /// An instant query's result (a vector's samples, or a scalar as one element).
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let data = self.api("query", &[("query", expr)]).await?;
        Ok(match &data["result"] {
            Value::Array(samples) => samples.clone(),
            Value::Null => Vec::new(),
            scalar => vec![scalar.clone()],
        })
    }

    /// A range query over the last `minutes` at `step` seconds, as a Grafana panel asks: each
    /// series' finite values.
    pub async fn query_range(&self, expr: &str, minutes: u64, step: u64) -> Result<Vec<(Value, Vec<f64>)>> {
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let (start, end, step) = (
            (end - minutes * 60).to_string(),
            end.to_string(),
            step.to_string(),
        );
        let params = [("query", expr), ("start", &start), ("end", &end), ("step", &step)];
        let data = self.api("query_range", &params).await?;
        let series = data["result"].as_array().cloned().unwrap_or_default();
        Ok(series
            .into_iter()
            .map(|s| {
                let values = s["values"].as_array().cloned().unwrap_or_default();
                let finite = values
                    .iter()
                    .filter_map(|v| v[1].as_str()?.parse::<f64>().ok())
                    .filter(|v| v.is_finite())
                    .collect();
                (s["metric"].clone(), finite)
            })
            .collect())
    }

    /// The active scrape targets (`/api/v1/targets`).
    pub async fn targets(&self) -> Result<Vec<Value>> {
        let data = self.api("targets", &[("state", "active")]).await?;
        Ok(data["activeTargets"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
