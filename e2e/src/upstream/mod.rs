//! [`TestUpstream`]: a binary cache directory served over HTTP on 127.0.0.1,
//! in-process, on a thread and runtime of its own (so it serves while a test
//! blocks, from `#[test]` and `#[tokio::test]` alike), with request counters
//! and faults that can be switched at run time.

mod serve;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::serve::ListenerExt;
use tokio::sync::oneshot;

/// Faults injected into answers for the paths they match; all off by default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Faults {
    /// The first N requests for each matching path (counted from the last
    /// [`TestUpstream::set_faults`]) are answered with `fail_status`.
    pub fail_first_n: u32,
    /// Status of failed answers (default 500).
    pub fail_status: u16,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Send bodies at most this fast (0 = unlimited).
    pub rate_bytes_per_s: u64,
    /// Send half the body, then close the connection (`Content-Length`
    /// still promises all of it).
    pub truncate: bool,
    /// Flip one byte in the middle of the body.
    pub corrupt: bool,
    /// Truncate or corrupt only the first N requests for each matching path (counted as for
    /// `fail_first_n`; 0: every request), so a retry finds the upstream well again.
    pub body_faults_first_n: u32,
    /// Only paths starting with this (e.g. `/nar/`).
    pub only_paths_with_prefix: Option<String>,
    /// Only paths ending with this (e.g. `.narinfo`).
    pub only_paths_with_suffix: Option<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            fail_first_n: 0,
            fail_status: 500,
            delay: Duration::ZERO,
            rate_bytes_per_s: 0,
            truncate: false,
            corrupt: false,
            body_faults_first_n: 0,
            only_paths_with_prefix: None,
            only_paths_with_suffix: None,
        }
    }
}

impl Faults {
    /// True when these faults apply to the request path `path`.
    pub fn applies_to(&self, path: &str) -> bool {
        self.only_paths_with_prefix
            .as_deref()
            .is_none_or(|p| path.starts_with(p))
            && self
                .only_paths_with_suffix
                .as_deref()
                .is_none_or(|s| path.ends_with(s))
    }
}

/// Request counters, by request path (as sent, without the query).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// GET requests per path.
    pub gets: BTreeMap<String, u64>,
    /// HEAD requests per path.
    pub heads: BTreeMap<String, u64>,
    /// Requests with any other method, per path.
    pub others: BTreeMap<String, u64>,
    /// Answers changed by a fault (failed, truncated, corrupted).
    pub faults: u64,
}

impl Stats {
    /// GET requests for `path` (e.g. `/nar/<hash>.nar.xz`).
    pub fn get(&self, path: &str) -> u64 {
        self.gets.get(path).copied().unwrap_or(0)
    }

    /// HEAD requests for `path`.
    pub fn head(&self, path: &str) -> u64 {
        self.heads.get(path).copied().unwrap_or(0)
    }

    /// Every request, whatever its method and path.
    pub fn total(&self) -> u64 {
        [&self.gets, &self.heads, &self.others]
            .iter()
            .flat_map(|m| m.values())
            .sum()
    }

    /// GET requests, all paths.
    pub fn total_gets(&self) -> u64 {
        self.gets.values().sum()
    }

    /// Every path requested with any method, except those in `ignore`.
    pub fn paths_except(&self, ignore: &[&str]) -> Vec<String> {
        let all = self
            .gets
            .keys()
            .chain(self.heads.keys())
            .chain(self.others.keys());
        let paths: BTreeSet<&String> = all.filter(|p| !ignore.contains(&p.as_str())).collect();
        paths.into_iter().cloned().collect()
    }
}

/// State shared by the server's handlers and the test.
pub(crate) struct Shared {
    root: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    stats: Stats,
    /// Fault rules in force: a request gets the first that is not the default and applies to
    /// its path.
    faults: Vec<Faults>,
    /// Requests per path since the faults were set (for `fail_first_n`).
    seen: HashMap<String, u32>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running in-process upstream cache. Stops when dropped.
pub struct TestUpstream {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop_tx: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestUpstream {
    /// Serves the binary cache directory `dir` on a free port of 127.0.0.1.
    pub fn start(dir: impl Into<PathBuf>) -> Result<TestUpstream> {
        let root: PathBuf = dir.into();
        anyhow::ensure!(root.is_dir(), "{} is not a directory", root.display());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-upstream")
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            root,
            state: Mutex::new(State::default()),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let app = axum::Router::new()
            .fallback(serve::handle)
            .with_state(shared.clone());
        let thread = std::thread::Builder::new()
            .name(format!("test-upstream-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let listener = listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stop_rx => {}
                    }
                });
                // Dropping the runtime drops every connection task: open
                // connections are closed, not drained.
                runtime.shutdown_timeout(Duration::from_secs(2));
            })?;
        Ok(TestUpstream {
            url: format!("http://{addr}"),
            addr,
            shared,
            stop_tx: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `url` + `path` (`path` starts with `/`).
    pub fn url_for(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A snapshot of the request counters.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// Zeroes the request counters.
    pub fn reset_stats(&self) {
        self.shared.lock().stats = Stats::default();
    }

    /// Replaces the faults in force (from the next request on) and restarts
    /// the per-path counts behind `fail_first_n`.
    pub fn set_faults(&self, faults: Faults) {
        self.set_fault_rules(vec![faults]);
    }

    /// Like [`Self::set_faults`] with several rules: each request gets the first rule that
    /// applies to its path (e.g. a slow rule for one NAR, then another for every other path).
    pub fn set_fault_rules(&self, rules: Vec<Faults>) {
        let mut state = self.shared.lock();
        state.faults = rules;
        state.seen.clear();
    }

    /// Back to a well-behaved server.
    pub fn clear_faults(&self) {
        self.set_faults(Faults::default());
    }

    /// Stops serving: closes the listener (new connections are refused) and
    /// every open connection. Idempotent.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}
