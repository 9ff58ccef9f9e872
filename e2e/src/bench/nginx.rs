//! nginx from `e2e/bench/nginx.conf.template`, in a temporary prefix: a
//! static server of a cache directory and a `proxy_cache` (lock on) in front
//! of an upstream, both on free ports of 127.0.0.1. Stopped on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tempfile::TempDir;

use super::{procfs, Server, Target};
use crate::util::tail_of_file;

/// The configuration template, carried in the binary.
pub const TEMPLATE: &str = include_str!("../../bench/nginx.conf.template");
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running nginx (master in the foreground, `daemon off`).
pub struct Nginx {
    /// (a) the static server of the cache directory.
    pub static_addr: SocketAddr,
    /// (b) the caching proxy in front of the upstream.
    pub proxy_addr: SocketAddr,
    pub prefix: PathBuf,
    child: Option<Child>,
    /// Every worker seen, killed if the master leaves them behind.
    workers: Vec<u32>,
    _tmp: TempDir,
}

impl Nginx {
    /// Starts nginx serving `root` statically and proxying to `upstream`.
    pub async fn start(root: &Path, upstream: SocketAddr) -> Result<Nginx> {
        let mut last = String::new();
        for _attempt in 0..3 {
            let mut nginx = spawn(root, upstream)?;
            match nginx.wait_ready().await {
                Ok(()) => return Ok(nginx),
                Err(e) => {
                    last = format!("{e:#}\n--- nginx error.log ---\n{}", nginx.log_tail(20));
                    if !last.contains("in use") {
                        break;
                    }
                }
            }
        }
        bail!("nginx could not be started: {last}")
    }

    /// The static server as a bench target.
    pub fn static_target(&self) -> Target {
        self.target(self.static_addr)
    }

    /// The caching proxy as a bench target.
    pub fn proxy_target(&self) -> Target {
        self.target(self.proxy_addr)
    }

    fn target(&self, addr: SocketAddr) -> Target {
        Target {
            server: Server::Nginx,
            addr,
            pid: self.child.as_ref().map_or(0, Child::id),
            with_children: true,
            replicas: Vec::new(),
        }
    }

    /// The last lines of its error log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_of_file(&self.prefix.join("error.log"), lines)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = format!("http://{}/nix-cache-info", self.static_addr);
        loop {
            if let Some(status) = self.child.as_mut().map(Child::try_wait).transpose()?.flatten() {
                bail!("nginx exited at start ({status})");
            }
            let answer = tokio::time::timeout(Duration::from_secs(2), crate::http::get(&url)).await;
            if let Ok(Ok((status, _))) = answer {
                ensure!(
                    status.is_success(),
                    "GET {url}: {status} (can nginx read the cache dir?)"
                );
                self.remember_workers();
                ensure!(!self.workers.is_empty(), "nginx has no worker processes");
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("nginx did not answer GET {url} within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn remember_workers(&mut self) {
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return;
        };
        for worker in procfs::children_of(pid) {
            if !self.workers.contains(&worker) {
                self.workers.push(worker);
            }
        }
    }

    /// Fast shutdown (SIGTERM), at most 5 s, then SIGKILL for the master and
    /// any worker left. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.workers.extend(procfs::children_of(child.id()));
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        for &worker in &self.workers {
            if Path::new(&format!("/proc/{worker}")).exists() {
                signal(worker, "KILL");
            }
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn spawn(root: &Path, upstream: SocketAddr) -> Result<Nginx> {
    let tmp = tempfile::Builder::new()
        .prefix("nixcache-bench-nginx-")
        .tempdir()?;
    let prefix = tmp.path().to_path_buf();
    std::fs::create_dir_all(prefix.join("tmp"))?;
    let (static_port, proxy_port) = (free_port()?, free_port()?);
    let conf = render(&[
        ("USER", user_line()),
        ("PREFIX", prefix.display().to_string()),
        ("ROOT", root.display().to_string()),
        ("UPSTREAM", upstream.to_string()),
        ("STATIC_PORT", static_port.to_string()),
        ("PROXY_PORT", proxy_port.to_string()),
    ])?;
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let out = std::fs::File::create(prefix.join("nginx.out"))?;
    let child = Command::new(super::setup::nginx_path()?)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(prefix.join("error.log"))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("cannot start nginx")?;
    Ok(Nginx {
        static_addr: SocketAddr::from(([127, 0, 0, 1], static_port)),
        proxy_addr: SocketAddr::from(([127, 0, 0, 1], proxy_port)),
        prefix,
        child: Some(child),
        workers: Vec::new(),
        _tmp: tmp,
    })
}

/// The template with every `{{NAME}}` replaced.
pub fn render(fields: &[(&str, String)]) -> Result<String> {
    let mut text = TEMPLATE.to_string();
    for (name, value) in fields {
        text = text.replace(&format!("{{{{{name}}}}}"), value);
    }
    if let Some(at) = text.find("{{") {
        bail!(
            "nginx.conf.template: unfilled field at {:?}",
            &text[at..(at + 30).min(text.len())]
        );
    }
    Ok(text)
}

/// Root's workers run as root: the fixture cache lies under /root, which
/// `www-data` cannot read. Otherwise nginx ignores `user` and runs as us.
fn user_line() -> String {
    if effective_uid() == Some(0) {
        "user root;".to_string()
    } else {
        "# not started as root: the workers run as the current user".to_string()
    }
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_renders() -> Result<()> {
        let fields = ["USER", "PREFIX", "ROOT", "UPSTREAM", "STATIC_PORT", "PROXY_PORT"];
        let text = render(&fields.map(|f| (f, format!("x{f}"))))?;
        assert!(text.contains("listen 127.0.0.1:xSTATIC_PORT;"));
        assert!(text.contains("sendfile on;"));
        assert!(render(&[]).is_err());
        Ok(())
    }
}
