//! [`Proxy`]: the real `nixcache serve` binary as a child process on a free
//! port of 127.0.0.1, with its own data directory and a log file.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use tempfile::TempDir;

use crate::util::{run_bounded, tail_of_file, target_dir};

/// How to start the proxy.
#[derive(Clone, Debug, Default)]
pub struct ProxyOptions {
    /// `--upstream` URLs, in order.
    pub upstreams: Vec<String>,
    /// `--upstream-public-key` keys (`name:base64`).
    pub upstream_keys: Vec<String>,
    /// More arguments after the ones above.
    pub extra_args: Vec<String>,
    /// `--data-dir`; a new temporary directory when None.
    pub data_dir: Option<PathBuf>,
    /// More environment variables (e.g. AWS credentials).
    pub env: Vec<(String, String)>,
    /// The `Authorization` header the harness itself sends (its readiness check, `/pubkey`):
    /// for a private cache (`--read-credentials-file`).
    pub authorization: Option<String>,
}

impl ProxyOptions {
    /// One upstream and its key.
    pub fn new(upstream: &str, upstream_key: &str) -> ProxyOptions {
        ProxyOptions {
            upstreams: vec![upstream.to_string()],
            upstream_keys: vec![upstream_key.to_string()],
            ..ProxyOptions::default()
        }
    }
}

fn with_authorization(request: reqwest::RequestBuilder, value: Option<&str>) -> reqwest::RequestBuilder {
    match value {
        Some(value) => request.header(reqwest::header::AUTHORIZATION, value),
        None => request,
    }
}

/// A running `nixcache serve`; killed on drop, which also prints the tail of
/// its log (shown by the test harness when the test fails).
pub struct Proxy {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    pub addr: SocketAddr,
    /// What `GET /pubkey` said: `name:base64`.
    pub public_key: String,
    pub data_dir: PathBuf,
    /// Its stdout and stderr.
    pub log_file: PathBuf,
    child: Option<Child>,
    /// Holds the log (and the data directory unless one was given).
    tmp: Option<TempDir>,
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Whether a proxy prints its log's tail when dropped (see `Drop`); the bench, which is no
/// test, turns it off.
static LOG_TAIL_ON_DROP: AtomicBool = AtomicBool::new(true);

/// Stops proxies from printing their log's tail when dropped, for a program that is no test.
pub fn no_log_tail_on_drop() {
    LOG_TAIL_ON_DROP.store(false, Ordering::Relaxed);
}

impl Proxy {
    /// Starts the proxy and waits (bounded) until `GET /nix-cache-info`
    /// answers 200, then reads its key from `GET /pubkey`.
    pub async fn start(opts: ProxyOptions) -> Result<Proxy> {
        let bin = tokio::task::spawn_blocking(nixcache_bin).await??;
        let tmp = tempfile::Builder::new().prefix("nixcache-e2e-proxy-").tempdir()?;
        let data_dir = opts.data_dir.clone().unwrap_or_else(|| tmp.path().join("data"));
        std::fs::create_dir_all(&data_dir)?;
        let mut tmp = Some(tmp);
        for attempt in 1..=3 {
            let port = free_port()?;
            let log_file = tmp
                .as_ref()
                .context("no temp dir")?
                .path()
                .join(format!("nixcache-{attempt}.log"));
            let child = spawn(&bin, port, &data_dir, &opts, &log_file)?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut proxy = Proxy {
                url: format!("http://{addr}"),
                addr,
                public_key: String::new(),
                data_dir: data_dir.clone(),
                log_file,
                child: Some(child),
                tmp: tmp.take(),
            };
            match proxy.wait_ready(opts.authorization.as_deref()).await {
                Ok(()) => {
                    proxy.public_key = proxy.fetch_public_key(opts.authorization.as_deref()).await?;
                    return Ok(proxy);
                }
                Err(e) if attempt < 3 && proxy.log_tail(20).contains("in use") => {
                    tracing::warn!("port {port} was taken, retrying: {e}");
                    proxy.stop();
                    tmp = proxy.tmp.take();
                }
                Err(e) => bail!("{e:#}\n--- nixcache log (tail) ---\n{}", proxy.log_tail(40)),
            }
        }
        Err(anyhow!("nixcache could not be started"))
    }

    /// `url` + `path` (`path` starts with `/`).
    pub fn url_for(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The sum of the proxy's `/metrics` samples whose series starts with `prefix` and
    /// contains `part` (a label such as `status="206"`).
    pub async fn metric(&self, prefix: &str, part: &str) -> Result<u64> {
        let (_, body) = crate::http::get(&self.url_for("/metrics")).await?;
        Ok(String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| l.starts_with(prefix) && l.contains(part))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }

    /// The last `lines` lines the proxy logged.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_of_file(&self.log_file, lines)
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM (a graceful shutdown, as Kubernetes does) and waits up to `limit` for the
    /// process to exit; returns its exit status.
    pub async fn terminate(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let child = self.child.as_mut().context("the proxy is not running")?;
        let pid = child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status()?;
        ensure!(status.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            ensure!(
                Instant::now() < deadline,
                "nixcache still runs {limit:?} after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the proxy (SIGKILL) and reaps it. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn wait_ready(&mut self, authorization: Option<&str>) -> Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = self.url_for("/nix-cache-info");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("nixcache exited before it was ready ({status})");
                }
            }
            let last = match with_authorization(client.get(&url), authorization).send().await {
                Ok(r) if r.status() == reqwest::StatusCode::OK => return Ok(()),
                Ok(r) => format!("status {}", r.status()),
                Err(e) => format!("{e}"),
            };
            if Instant::now() >= deadline {
                bail!("GET {url} was not 200 within {READY_TIMEOUT:?} (last: {last})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn fetch_public_key(&self, authorization: Option<&str>) -> Result<String> {
        let request = reqwest::Client::new().get(self.url_for("/pubkey"));
        let response = with_authorization(request, authorization).send().await?;
        ensure!(
            response.status().is_success(),
            "GET /pubkey: {}",
            response.status()
        );
        let key = response.text().await?.trim().to_string();
        ensure!(
            key.split_once(':')
                .is_some_and(|(n, k)| !n.is_empty() && !k.is_empty()),
            "bad key {key:?}"
        );
        Ok(key)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // libtest shows a test's output only when it fails (a panic or an
        // `Err` return alike), so this is "the log tail of a failed test".
        if LOG_TAIL_ON_DROP.load(Ordering::Relaxed) || std::thread::panicking() {
            eprintln!(
                "--- nixcache log {} (last 40 lines) ---\n{}\n--- end of nixcache log ---",
                self.log_file.display(),
                self.log_tail(40)
            );
        }
        self.stop();
    }
}

fn spawn(bin: &Path, port: u16, data_dir: &Path, opts: &ProxyOptions, log_file: &Path) -> Result<Child> {
    let log = File::create(log_file)?;
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir);
    for upstream in &opts.upstreams {
        cmd.arg("--upstream").arg(upstream);
    }
    for key in &opts.upstream_keys {
        cmd.arg("--upstream-public-key").arg(key);
    }
    cmd.args(&opts.extra_args);
    // Settings come from the arguments only, not from the caller's NIXCACHE_*.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("NIXCACHE_") {
            cmd.env_remove(name);
        }
    }
    cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
    cmd.env("NO_COLOR", "1"); // a log file, not a terminal
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    cmd.spawn()
        .with_context(|| format!("cannot start {}", bin.display()))
}

/// A port that was free a moment ago.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The `nixcache` binary: `$NIXCACHE_BIN`, else built once per test process
/// with `$CARGO build -p nixcache --bin nixcache` into this target directory.
pub fn nixcache_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("NIXCACHE_BIN").filter(|b| !b.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_nixcache().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn build_nixcache() -> Result<PathBuf> {
    let target = target_dir();
    // The profile of the running tests: `<target>/<profile>/deps/<test>`.
    let exe = std::env::current_exe()?;
    let profile = exe
        .parent()
        .filter(|d| d.ends_with("deps"))
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .map_or_else(|| "debug".to_string(), |n| n.to_string_lossy().into_owned());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("no workspace dir")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace).env("CARGO_TARGET_DIR", &target);
    cmd.args(["build", "-p", "nixcache", "--bin", "nixcache"]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let t0 = Instant::now();
    let out = run_bounded(&mut cmd, Duration::from_secs(1800))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        last_lines(&stderr, 40)
    );
    let bin = target.join(&profile).join("nixcache");
    ensure!(bin.is_file(), "{} does not exist after {cmd:?}", bin.display());
    eprintln!(
        "[nixcache-e2e] built {} in {} ms",
        bin.display(),
        t0.elapsed().as_millis()
    );
    Ok(bin)
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
