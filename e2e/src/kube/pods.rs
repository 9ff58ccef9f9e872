//! The pods of the tests really run: [`ProcessKubelet`] (`e2e/kube/process-kubelet.py`) runs
//! the containers of pods whose image it maps to a local binary as local processes, and
//! [`ServiceProxy`] (`e2e/kube/service-proxy.py`) spreads connections to a Service over its ready
//! pods, as kube-proxy would. Both are stopped with the test (and, should the test process die
//! without unwinding, by a watchdog that follows its pid).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::operator::free_port;
use super::plane::{kube_dir, ControlPlane};
use crate::util::tail_of_file;

/// A child process in its own process group, under a watchdog that ends it when the test
/// process is gone.
struct Helper {
    child: Option<Child>,
    log_file: PathBuf,
}

impl Helper {
    fn spawn(program: &str, args: &[String], log_file: PathBuf) -> Result<Helper> {
        let log = File::options().create(true).append(true).open(&log_file)?;
        // The watchdog: runs the helper, and sends it SIGTERM when our pid disappears.
        let script = r#"w=$1; shift; "$@" & c=$!
trap 'kill -TERM $c 2>/dev/null; wait $c; exit' TERM INT
while kill -0 "$w" 2>/dev/null && kill -0 "$c" 2>/dev/null; do sleep 0.5; done
kill -TERM $c 2>/dev/null; wait $c"#;
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(script)
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().with_context(|| format!("cannot start {program}"))?;
        Ok(Helper {
            child: Some(child),
            log_file,
        })
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM through the watchdog, then waits up to `limit` before SIGKILL.
    fn stop(&mut self, limit: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The process kubelet: runs the pods of mapped images in one namespace, on a node of its own.
pub struct ProcessKubelet {
    helper: Helper,
    /// One log file per container under here.
    pub log_dir: PathBuf,
}

impl ProcessKubelet {
    /// Starts it for the pods of `namespace` and waits until its node is registered; `images`
    /// maps an image reference to the binary that is its entrypoint.
    pub async fn start(
        plane: &ControlPlane,
        namespace: &str,
        images: &[(&str, &Path)],
        dir: &Path,
    ) -> Result<ProcessKubelet> {
        let log_dir = dir.join("pods");
        std::fs::create_dir_all(&log_dir)?;
        let ready_file = dir.join("kubelet.ready");
        let mut args = vec![
            kube_dir().join("process-kubelet.py").display().to_string(),
            "--env-file".into(),
            plane.env_file()?.display().to_string(),
            "--namespace".into(),
            namespace.into(),
            "--node-name".into(),
            format!("process-{namespace}"),
            "--state-dir".into(),
            dir.join("kubelet-state").display().to_string(),
            "--log-dir".into(),
            log_dir.display().to_string(),
            "--ready-file".into(),
            ready_file.display().to_string(),
            // Probes at least every second: the pods ask for 5 s, which only slows the tests.
            "--probe-period-cap".into(),
            "1".into(),
        ];
        for (image, bin) in images {
            args.extend(["--image-map".into(), format!("{image}={}", bin.display())]);
        }
        let mut helper = Helper::spawn("python3", &args, dir.join("kubelet.log"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready_file.exists() {
            if let Some(status) = helper.exited() {
                bail!(
                    "the process kubelet exited at start ({status}):\n{}",
                    tail_of_file(&helper.log_file, 30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the process kubelet registered no node within 30 s:\n{}",
                    tail_of_file(&helper.log_file, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(ProcessKubelet { helper, log_dir })
    }

    /// The kubelet's own log, and the tail of every container log, for a failure message.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = format!(
            "--- kubelet ---\n{}\n",
            tail_of_file(&self.helper.log_file, lines)
        );
        if let Ok(entries) = std::fs::read_dir(&self.log_dir) {
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for path in paths.into_iter().filter(|p| p.is_file()) {
                out.push_str(&format!(
                    "--- {} ---\n{}\n",
                    path.display(),
                    tail_of_file(&path, lines)
                ));
            }
        }
        out
    }

    /// Fails when the kubelet itself died.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.helper.exited() {
            bail!("the process kubelet exited ({status}):\n{}", self.logs(30));
        }
        Ok(())
    }
}

impl Drop for ProcessKubelet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs(40));
        }
        // It stops its pods' processes on SIGTERM.
        self.helper.stop(Duration::from_secs(40));
    }
}

/// A loopback port forwarding to the ready pods of a Service.
pub struct ServiceProxy {
    helper: Helper,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl ServiceProxy {
    /// Forwards `127.0.0.1:<free port>` to Service `namespace/service`'s ready pods.
    pub async fn start(
        plane: &ControlPlane,
        namespace: &str,
        service: &str,
        dir: &Path,
    ) -> Result<ServiceProxy> {
        let port = free_port()?;
        let args = vec![
            kube_dir().join("service-proxy.py").display().to_string(),
            "--env-file".into(),
            plane.env_file()?.display().to_string(),
            "--namespace".into(),
            namespace.into(),
            "--service".into(),
            service.into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        let mut helper = Helper::spawn("python3", &args, dir.join(format!("service-{service}.log")))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = helper.exited() {
                bail!(
                    "the Service stand-in exited ({status}):\n{}",
                    tail_of_file(&helper.log_file, 30)
                );
            }
            if Instant::now() > deadline {
                bail!("the Service stand-in never listened on {port}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(ServiceProxy {
            helper,
            url: format!("http://127.0.0.1:{port}"),
        })
    }
}

impl Drop for ServiceProxy {
    fn drop(&mut self) {
        self.helper.stop(Duration::from_secs(5));
    }
}
