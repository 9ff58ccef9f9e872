//! The proxy under test: `build_state` + `router`, served in-process on 127.0.0.1:0 by the real
//! accept loop (`http::server::serve`, with its connection limits from the flags).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Once,
    time::Duration,
};

use clap::Parser;
use nixcache::cli::{Cli, Command};
use nixcache_protocol::PublicKey;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use super::upstream::Upstream;

pub struct Proxy {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// The cache behind the server, for what `app::serve` does on a schedule (probes).
    #[allow(dead_code)] // read only by the test binaries that probe
    cache: nixcache::cache::Cache,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// The `nixcache serve` command line for these upstreams and keys; `extra` flags come last.
fn serve_args(data_dir: &Path, upstreams: &[String], keys: &[PublicKey], extra: &[&str]) -> Vec<String> {
    let netrc = data_dir.join("empty.netrc");
    std::fs::create_dir_all(data_dir).unwrap();
    std::fs::write(&netrc, "").unwrap();
    let mut args: Vec<String> = vec!["nixcache".into(), "serve".into()];
    let mut flag = |name: &str, value: String| args.extend([name.to_owned(), value]);
    flag("--data-dir", data_dir.display().to_string());
    flag("--hostname", "test-proxy".into());
    flag("--netrc-file", netrc.display().to_string());
    flag("--listen", "127.0.0.1:0".into());
    if !extra.contains(&"--negative-ttl") {
        flag("--negative-ttl", "60s".into());
    }
    // Prefetching adds upstream requests that the tests counting them do not expect; the tests
    // of prefetching turn it on.
    if !extra.contains(&"--prefetch") {
        flag("--prefetch", "off".into());
    }
    for upstream in upstreams {
        flag("--upstream", upstream.clone());
    }
    for key in keys {
        flag("--upstream-public-key", key.to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

impl Proxy {
    /// A proxy over `upstreams` trusting `keys`; `extra` are more `serve` flags.
    pub async fn start(data_dir: &Path, upstreams: &[&Upstream], keys: &[PublicKey], extra: &[&str]) -> Self {
        let urls: Vec<String> = upstreams.iter().map(|u| u.url.clone()).collect();
        Self::start_urls(data_dir, &urls, keys, extra).await
    }

    /// Like `start`, with upstream URLs given verbatim.
    pub async fn start_urls(
        data_dir: &Path,
        upstreams: &[String],
        keys: &[PublicKey],
        extra: &[&str],
    ) -> Self {
        assert!(
            !upstreams.is_empty(),
            "without --upstream the proxy would use cache.nixos.org"
        );
        init_tracing();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let advertise = format!("http://{addr}");
        let mut extra = extra.to_vec();
        if !extra.contains(&"--advertise-url") {
            extra.extend(["--advertise-url", &advertise]);
        }
        let cli = Cli::try_parse_from(serve_args(data_dir, upstreams, keys, &extra)).unwrap();
        let Command::Serve(mut args) = cli.command else {
            panic!("not a serve command");
        };
        // As `app::serve` does: what the process is reached at (its warm-ups ask itself).
        args.listen = addr;
        let state = nixcache::app::build_state(&args).await.unwrap();
        // `app::serve` does this on a schedule; done once here so priorities are known.
        state.cache.upstreams().probe().await;
        let cache = state.cache.clone();
        let limits = nixcache::http::server::ServerLimits::from(&args.connections);
        let metrics = std::sync::Arc::clone(state.cache.metrics());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(nixcache::http::server::serve(
            listener,
            nixcache::http::router(state),
            limits,
            metrics,
            async {
                let _ = rx.await;
            },
        ));
        Self {
            addr,
            data_dir: data_dir.to_owned(),
            cache,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Probes the upstreams now, as `serve` does every `--upstream-probe-interval`.
    #[allow(dead_code)] // not every test binary probes
    pub async fn probe_upstreams(&self) {
        self.cache.upstreams().probe().await;
    }

    /// One garbage collection down to `max_size`, as `serve --gc-schedule` runs it (nothing is
    /// too recent to evict).
    #[allow(dead_code)] // not every test binary collects
    pub async fn collect_garbage(&self, max_size: u64) -> nixcache::gc::GcReport {
        let options = nixcache::gc::GcOptions {
            max_size,
            keep_recent: Duration::ZERO,
            dry_run: false,
            keep_evicted: nixcache::gc::DEFAULT_KEEP_EVICTED,
            keep_uploads: false,
        };
        self.cache.collect_garbage(&options).await.unwrap()
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops serving; waits (bounded) for open connections to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                abort.abort();
            }
        }
    }

    /// Regular files under `<data dir>/nar`, recursively.
    pub fn stored_files(&self) -> Vec<PathBuf> {
        files_under(&self.data_dir.join("nar"))
    }

    /// Regular files under `<data dir>/tmp`, recursively, but for each process's lock file.
    pub fn tmp_files(&self) -> Vec<PathBuf> {
        let mut files = files_under(&self.data_dir.join("tmp"));
        files.retain(|p| p.file_name().is_none_or(|n| n != nixcache::scratch::LOCK_FILE));
        files
    }

    /// Waits (bounded) until a file named `name` is stored under `nar/` and recorded in the
    /// metadata (a client may have all its bytes a moment before); panics if it never is.
    pub async fn wait_stored(&self, name: &str) -> PathBuf {
        let file = nixcache_protocol::NarFile::parse(name).unwrap();
        let db = nixcache::db::connect(&self.sqlite_url()).await.unwrap();
        let found = super::wait_until(super::TIMEOUT, || async {
            self.stored_file(name).is_some() && db.get_nar(&file).await.unwrap().is_some()
        })
        .await;
        assert!(found, "{name} not stored under nar/: {:?}", self.stored_files());
        self.stored_file(name).unwrap()
    }

    /// Waits (bounded) until this process's fills have ended: a fill stays joinable for a
    /// moment after its file is stored, and a client joining it reads that file at the size the
    /// fill knows, so a test that damages a stored file waits for this first.
    #[allow(dead_code)] // only the tests that damage stored files
    pub async fn wait_fills_ended(&self) {
        let ended = super::wait_until(super::TIMEOUT, || async { self.cache.fills_in_progress() == 0 }).await;
        assert!(
            ended,
            "{} fills still in progress",
            self.cache.fills_in_progress()
        );
    }

    /// The default (SQLite) database in the data dir.
    pub fn sqlite_url(&self) -> String {
        format!("sqlite://{}/db.sqlite", self.data_dir.display())
    }

    /// The stored file named `name` anywhere under `nar/`, if any.
    pub fn stored_file(&self, name: &str) -> Option<PathBuf> {
        self.stored_files()
            .into_iter()
            .find(|p| p.file_name().is_some_and(|n| n == name))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push(path),
                Ok(_) => out.push(path),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}
