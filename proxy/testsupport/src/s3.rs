//! A throwaway S3 server for tests: `S3sFs::start()` finds the `s3s-fs` binary, runs it on a
//! free port over a temp dir, and kills it when dropped. For outage tests it can be stopped and
//! started again on the same port and data, or paused (hung). s3s-fs checks SigV4 signatures and
//! keeps objects as plain files (`<data dir>/<bucket>/<key>`), so tests can look at them.
//!
//! Where the binary is looked for: `$NIXCACHE_TEST_S3S_FS`, `PATH`, `~/.cache/nixcache-tools/bin`
//! (where `.ci/run` installs it), `~/.cargo/bin`. When it is missing, `start` returns `None`
//! after printing `SKIP: ...`, unless `CI` or `NIXCACHE_TEST_REQUIRE_S3=1` is set: then it fails.

use std::{
    io,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

pub const ACCESS_KEY: &str = "nixcache-test";
pub const SECRET_KEY: &str = "nixcache-test-secret";
/// The version `.ci/run` installs.
pub const VERSION: &str = "0.14.1";
const BINARY: &str = "s3s-fs";

pub struct S3sFs {
    binary: PathBuf,
    /// `None` while stopped.
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    buckets: AtomicU32,
}

impl S3sFs {
    /// A running server, or `None` when s3s-fs is missing and not required.
    pub async fn start() -> io::Result<Option<Self>> {
        let Some(binary) = find_binary()? else {
            let hint = format!(
                "s3s-fs not found (set NIXCACHE_TEST_S3S_FS, or: cargo install --locked {BINARY} \
                 --version {VERSION} --features binary)"
            );
            if required() {
                return Err(io::Error::new(io::ErrorKind::NotFound, hint));
            }
            eprintln!("SKIP: {hint}");
            return Ok(None);
        };
        // The free port may be taken between the probe and the server's bind: try again.
        let mut last = None;
        for _ in 0..3 {
            match Self::spawn(&binary).await {
                Ok(server) => return Ok(Some(server)),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("s3s-fs did not start")))
    }

    async fn spawn(binary: &Path) -> io::Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("data"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut server = Self {
            binary: binary.to_owned(),
            child: None,
            port,
            dir,
            buckets: AtomicU32::new(0),
        };
        server.start_again().await?;
        Ok(server)
    }

    /// Starts the (stopped) server again, on the same port and over the same data.
    pub async fn start_again(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        // The old process's port may linger for a moment after a kill.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.launch().await {
                Ok(()) => return Ok(()),
                Err(err) if Instant::now() > deadline => return Err(err),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn launch(&mut self) -> io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(&self.binary)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.data_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let up = self.wait_until_up().await;
        if up.is_err() {
            self.stop();
        }
        up
    }

    async fn wait_until_up(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let child = self
                .child
                .as_mut()
                .ok_or_else(|| io::Error::other("s3s-fs is stopped"))?;
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                return Err(io::Error::other(format!("s3s-fs exited ({status}): {log}")));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::other("s3s-fs did not answer within 10 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server: connections to its port are refused until `start_again`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections are still accepted by the kernel, but nothing
    /// answers, as with a hung server or a network black hole. `resume` undoes it.
    pub fn pause(&self) -> io::Result<()> {
        self.signal("-STOP")
    }

    pub fn resume(&self) -> io::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> io::Result<()> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| io::Error::other("s3s-fs is stopped"))?;
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()?;
        if !status.success() {
            return Err(io::Error::other(format!("kill {signal} failed: {status}")));
        }
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("s3s-fs.log")
    }

    /// `nixcache serve` flags for NARs in `bucket` on this server, under `prefix`.
    pub fn serve_args(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let endpoint = self.endpoint();
        let pairs = [
            ("--storage", "s3"),
            ("--s3-bucket", bucket),
            ("--s3-endpoint", &endpoint),
            ("--s3-region", "us-east-1"),
            ("--s3-prefix", prefix),
        ];
        let mut args: Vec<String> = pairs
            .iter()
            .flat_map(|(f, v)| [f.to_string(), v.to_string()])
            .collect();
        args.push("--s3-path-style".into());
        args
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where s3s-fs keeps its buckets (one directory each).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Creates a new, empty bucket and returns its name. s3s-fs keeps a bucket as a directory of
    /// its root, so one is made there: the S3 API would need a client, which is the code under test.
    pub fn create_bucket(&self) -> io::Result<String> {
        let name = format!("test-{}", self.buckets.fetch_add(1, Ordering::Relaxed));
        std::fs::create_dir(self.data_dir().join(&name))?;
        Ok(name)
    }

    /// Parts of multipart uploads written (or being written), kept as `.upload_id-<id>.part-<n>`:
    /// their uploader knows the upload's id.
    pub fn upload_parts(&self) -> io::Result<usize> {
        let mut parts = 0;
        for entry in std::fs::read_dir(self.data_dir())? {
            let name = entry?.file_name();
            if name.to_string_lossy().starts_with(".upload_id-") {
                parts += 1;
            }
        }
        Ok(parts)
    }

    /// Multipart uploads begun and neither completed nor aborted. s3s-fs has no
    /// ListMultipartUploads; it keeps one `.upload-<id>.json` per open upload in its root.
    pub fn open_uploads(&self) -> io::Result<usize> {
        let mut open = 0;
        for entry in std::fs::read_dir(self.data_dir())? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".upload-") && name.ends_with(".json") {
                open += 1;
            }
        }
        Ok(open)
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        // A paused process is killed all the same (SIGKILL needs no cooperation).
        self.stop();
    }
}

/// True when a missing s3s-fs must fail the tests rather than skip them.
fn required() -> bool {
    let set = |name| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    set("CI") || set("NIXCACHE_TEST_REQUIRE_S3")
}

fn find_binary() -> io::Result<Option<PathBuf>> {
    if let Some(explicit) = std::env::var_os("NIXCACHE_TEST_S3S_FS") {
        let path = PathBuf::from(explicit);
        if !path.is_file() {
            let msg = format!("NIXCACHE_TEST_S3S_FS={} is not a file", path.display());
            return Err(io::Error::new(io::ErrorKind::NotFound, msg));
        }
        return Ok(Some(path));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME").map(PathBuf::from) {
        dirs.push(home.join(".cache/nixcache-tools/bin"));
        dirs.push(home.join(".cargo/bin"));
    }
    Ok(dirs.into_iter().map(|d| d.join(BINARY)).find(|p| p.is_file()))
}

/// The environment that points the standard AWS chain at this server's credentials: no profile,
/// no instance metadata probes.
pub const CREDENTIAL_ENV: [(&str, &str); 5] = [
    ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
    ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_CONFIG_FILE", "/nonexistent"),
    ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
];
