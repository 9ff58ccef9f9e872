//! Warm-ups asked for over HTTP (`POST /_nixcache/warm`): one at a time per process, run in the
//! background through this process's own listener (the same walk as `nixcache warm`, so
//! replicas share its downloads as they share a client's), and the last one's outcome kept for
//! `GET /_nixcache/warm`. Owned: shutdown stops a running one and waits for it.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use chrono::{DateTime, Utc};
use nixcache_protocol::StorePath;
use serde::{Serialize, Serializer};
use tokio_util::{
    sync::CancellationToken,
    task::{AbortOnDropHandle, TaskTracker},
};

use super::{WarmOptions, WarmReport};

/// Paths one request may name.
pub const MAX_PATHS: usize = 10_000;
/// Missing paths and failures kept of a finished run (the counts stay exact).
const KEPT_LINES: usize = 100;

/// How a warm-up asked for over HTTP runs.
#[derive(Clone, Debug)]
pub struct WarmJobOptions {
    /// This process's own address, e.g. `http://127.0.0.1:8501`.
    pub url: String,
    pub concurrency: usize,
    pub timeout: Duration,
    /// What the run shows its own listener (the replicas' token: a private cache lets it by).
    pub authorization: Option<super::Authorization>,
}

/// The process's warm-up: none yet, one running, or the last one's outcome.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum WarmState {
    Idle,
    Running {
        #[serde(serialize_with = "rfc3339")]
        started: DateTime<Utc>,
        /// Store paths asked for (their closures are walked).
        asked: usize,
        narinfos_only: bool,
    },
    Done(WarmOutcome),
}

/// What a finished run did.
#[derive(Clone, Debug, Serialize)]
pub struct WarmOutcome {
    #[serde(serialize_with = "rfc3339")]
    pub started: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub finished: DateTime<Utc>,
    pub asked: usize,
    pub narinfos_only: bool,
    /// Everything asked for is in the cache now.
    pub complete: bool,
    /// Paths of the closures found.
    pub paths: usize,
    pub nars: usize,
    pub nars_stored_before: usize,
    pub nar_bytes: u64,
    pub missing_count: usize,
    pub failed_count: usize,
    /// The first [`KEPT_LINES`] of each.
    pub missing: Vec<String>,
    pub failed: Vec<String>,
    /// The process began to stop before the run ended.
    pub stopped: bool,
}

/// Times as RFC 3339 text (UTC, whole seconds), as a person and `jq` read them.
fn rfc3339<S: Serializer>(time: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Why a warm-up was not started.
#[derive(Debug, thiserror::Error)]
pub enum WarmRefused {
    #[error(
        "a warm-up of {asked} paths is running since {}: ask again once it ended",
        started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )]
    Running { started: DateTime<Utc>, asked: usize },
    #[error("the server is shutting down")]
    Stopping,
}

/// The warm-ups of one process. Clones share them.
#[derive(Clone, Debug)]
pub struct WarmJobs {
    options: WarmJobOptions,
    state: Arc<Mutex<WarmState>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl WarmJobs {
    pub fn new(options: WarmJobOptions) -> Self {
        Self {
            options,
            state: Arc::new(Mutex::new(WarmState::Idle)),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    pub fn state(&self) -> WarmState {
        self.lock().clone()
    }

    /// Starts warming the closures of `paths` in the background, unless a run is going on or
    /// the process is stopping.
    pub fn start(&self, paths: Vec<StorePath>, narinfos_only: bool) -> Result<WarmState, WarmRefused> {
        let mut state = self.lock();
        if let WarmState::Running { started, asked, .. } = *state {
            return Err(WarmRefused::Running { started, asked });
        }
        // Checked, and the run spawned, under the lock `stop` takes to cancel: a run starts
        // before the tracker is closed and waited for, or not at all (it would run unowned).
        if self.stop.is_cancelled() {
            return Err(WarmRefused::Stopping);
        }
        let started = Utc::now();
        let running = WarmState::Running {
            started,
            asked: paths.len(),
            narinfos_only,
        };
        *state = running.clone();
        let options = WarmOptions {
            url: self.options.url.clone(),
            paths,
            concurrency: self.options.concurrency,
            narinfos_only,
            timeout: self.options.timeout,
            direct: true,
            authorization: self.options.authorization.clone(),
        };
        self.spawn_run(options, started);
        drop(state);
        Ok(running)
    }

    fn spawn_run(&self, options: WarmOptions, started: DateTime<Utc>) {
        let (asked, narinfos_only) = (options.paths.len(), options.narinfos_only);
        let (state, stop) = (Arc::clone(&self.state), self.stop.clone());
        tracing::info!(paths = asked, narinfos_only, "warm-up started");
        self.tasks.spawn(async move {
            // A task of its own, so that a panic in it ends as a failed run, not as a state
            // that says "running" for ever; aborted when stopped.
            let run = AbortOnDropHandle::new(tokio::spawn(async move { super::run(&options).await }));
            let report = tokio::select! {
                joined = run => Some(joined.unwrap_or_else(|e| Err(anyhow::anyhow!("the warm-up failed: {e}")))),
                () = stop.cancelled() => None,
            };
            let outcome = outcome(started, asked, narinfos_only, report);
            tracing::info!(
                complete = outcome.complete,
                paths = outcome.paths,
                nars = outcome.nars,
                nar_bytes = outcome.nar_bytes,
                missing = outcome.missing_count,
                failed = outcome.failed_count,
                stopped = outcome.stopped,
                "warm-up ended"
            );
            *state.lock().unwrap_or_else(|e| e.into_inner()) = WarmState::Done(outcome);
        });
    }

    /// Stops a running warm-up (at shutdown) and waits until it has ended.
    pub async fn stop(&self) {
        {
            let _state = self.lock();
            self.stop.cancel();
        }
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn lock(&self) -> MutexGuard<'_, WarmState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A run's report (`None`: stopped; `Some(Err)`: the cache could not be asked at all).
fn outcome(
    started: DateTime<Utc>,
    asked: usize,
    narinfos_only: bool,
    report: Option<anyhow::Result<WarmReport>>,
) -> WarmOutcome {
    let stopped = report.is_none();
    let report = match report {
        Some(Ok(report)) => report,
        Some(Err(err)) => WarmReport {
            failed: vec![format!("{err:#}")],
            ..WarmReport::default()
        },
        None => WarmReport::default(),
    };
    let kept = |lines: &[String]| lines.iter().take(KEPT_LINES).cloned().collect();
    WarmOutcome {
        started,
        finished: Utc::now(),
        asked,
        narinfos_only,
        complete: !stopped && report.complete(),
        paths: report.paths,
        nars: report.nars,
        nars_stored_before: report.nars_stored_before,
        nar_bytes: report.nar_bytes,
        missing_count: report.missing.len(),
        failed_count: report.failed.len(),
        missing: kept(&report.missing),
        failed: kept(&report.failed),
        stopped,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn jobs() -> WarmJobs {
        // Nothing listens on port 9 of loopback: every request fails at once.
        WarmJobs::new(WarmJobOptions {
            url: "http://127.0.0.1:9".into(),
            concurrency: 2,
            timeout: Duration::from_secs(5),
            authorization: None,
        })
    }

    fn path() -> StorePath {
        StorePath::from_absolute("/nix/store/00000000000000000000000000000000-absent").unwrap()
    }

    #[tokio::test]
    async fn one_run_at_a_time_and_its_outcome_kept() {
        let jobs = jobs();
        assert!(matches!(jobs.state(), WarmState::Idle));
        assert!(matches!(
            jobs.start(vec![path()], false),
            Ok(WarmState::Running { asked: 1, .. })
        ));
        let refused = jobs.start(vec![path(), path()], true).unwrap_err();
        assert!(
            matches!(refused, WarmRefused::Running { asked: 1, .. }),
            "{refused}"
        );
        tokio::time::timeout(Duration::from_secs(60), async {
            while matches!(jobs.state(), WarmState::Running { .. }) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the run ends");
        let WarmState::Done(outcome) = jobs.state() else {
            panic!("not done: {:?}", jobs.state())
        };
        assert!(!outcome.complete && !outcome.stopped, "{outcome:?}");
        assert_eq!((outcome.failed_count, outcome.paths), (1, 0), "{outcome:?}");
        assert!(jobs.start(vec![path()], false).is_ok(), "a new run may start");
        jobs.stop().await;
    }

    #[tokio::test]
    async fn stopping_ends_a_running_warm_up() {
        let jobs = jobs();
        // A listener that accepts and never answers: the run would wait for its timeout.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let jobs = WarmJobs::new(WarmJobOptions {
            url: format!("http://{}", listener.local_addr().unwrap()),
            ..jobs.options.clone()
        });
        jobs.start(vec![path()], false).unwrap();
        tokio::time::timeout(Duration::from_secs(2), jobs.stop())
            .await
            .expect("stop does not wait for the requests");
        let WarmState::Done(outcome) = jobs.state() else {
            panic!("not done: {:?}", jobs.state())
        };
        assert!(outcome.stopped && !outcome.complete, "{outcome:?}");
        let refused = jobs.start(vec![path()], false).unwrap_err();
        assert!(matches!(refused, WarmRefused::Stopping), "{refused}");
    }
}
