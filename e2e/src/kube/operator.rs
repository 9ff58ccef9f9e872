//! [`OperatorProcess`]: the `nixcache-operator` binary (built alone, as its image is) as a child
//! process, with the credentials of its ServiceAccount (the chart's RBAC, not an admin), watching
//! one namespace, optionally with its clock shifted by `faketime`.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::bins::operator_bin;
use crate::util::tail_of_file;

/// libfaketime for multi-threaded programs (Debian's `libfaketime`, pulled in by `faketime`).
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// How to start one operator replica.
#[derive(Clone, Debug)]
pub struct OperatorOptions {
    /// Kubeconfig with the ServiceAccount's token.
    pub kubeconfig: PathBuf,
    /// `--watch-namespace` and the Lease's namespace.
    pub namespace: String,
    /// `POD_NAME`: this replica's identity in the Lease.
    pub identity: String,
    /// `--proxy-image` for NixCaches without `spec.image`.
    pub proxy_image: String,
    /// Where the log goes.
    pub log_dir: PathBuf,
    /// libfaketime offset such as `+20s` (the process's wall clock runs that far off).
    pub clock_offset: Option<String>,
    /// More flags.
    pub extra_args: Vec<String>,
}

/// A running operator; killed on drop.
pub struct OperatorProcess {
    /// `/metrics`, `/healthz`, `/readyz`.
    pub admin: SocketAddr,
    /// stdout and stderr.
    pub log_file: PathBuf,
    /// Its identity in the Lease.
    pub identity: String,
    child: Option<Child>,
}

impl OperatorProcess {
    /// Starts it and waits until its admin server answers.
    pub async fn start(opts: OperatorOptions) -> Result<OperatorProcess> {
        let bin = tokio::task::spawn_blocking(operator_bin).await??;
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let log_file = opts.log_dir.join(format!("operator-{}.log", opts.identity));
        let log = File::options().create(true).append(true).open(&log_file)?;
        let mut cmd = Command::new(&bin);
        cmd.env_clear();
        if let Some(offset) = &opts.clock_offset {
            // libfaketime preloaded into the operator itself (the `faketime` wrapper forks, so
            // a signal to it would not reach the operator): its wall clock runs `offset` off.
            ensure!(
                Path::new(FAKETIME_LIB).is_file(),
                "{FAKETIME_LIB} is missing (apt-get install faketime)"
            );
            cmd.env("LD_PRELOAD", FAKETIME_LIB)
                .env("FAKETIME", offset)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", &opts.kubeconfig)
            .env("POD_NAME", &opts.identity)
            .env("POD_NAMESPACE", &opts.namespace)
            .env("RUST_LOG", "info,nixcache_operator=debug")
            .args(["--listen", &admin.to_string(), "--log-format", "text"])
            .args(["--watch-namespace", &opts.namespace])
            .args(["--proxy-image", &opts.proxy_image])
            // Short leases so failover tests take seconds (client-go's defaults are 15/10/2).
            .args([
                "--lease-duration",
                "6s",
                "--renew-deadline",
                "4s",
                "--retry-period",
                "1s",
            ])
            .args(&opts.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().with_context(|| format!("cannot start {cmd:?}"))?;
        let mut operator = OperatorProcess {
            admin,
            log_file,
            identity: opts.identity,
            child: Some(child),
        };
        operator.wait_admin().await?;
        Ok(operator)
    }

    async fn wait_admin(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("the operator exited at start ({status}):\n{}", self.log_tail(40));
                }
            }
            if self.get("/healthz").await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the operator's admin server never answered:\n{}",
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Status and body of `GET path` on the admin server.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        let response = reqwest::Client::new()
            .get(format!("http://{}{path}", self.admin))
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        tail_of_file(&self.log_file, n)
    }

    /// Its whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `signal` (`TERM`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, signal: &str) -> Result<()> {
        let pid = self.pid().context("the operator is not running")?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
        Ok(())
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let child = self.child.as_mut().context("not running")?;
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "the operator did not exit within {limit:?}:\n{}",
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log_file.display(), self.log_tail(60));
        }
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
