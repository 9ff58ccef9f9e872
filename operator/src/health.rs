//! The state behind `/readyz`: how the controller's watches fare.
//!
//! Ready means: this replica is a standby (it waits for the Lease; a rolling update of the
//! operator must be able to start it), or it runs the controller, has listed the NixCaches at
//! least once, and no watch has been failing for longer than [`FAILING_BOUND`]. A watch that
//! fails (an RBAC grant missing, an API gone) keeps being retried with its own backoff while the
//! others go on; this is what makes it visible besides the warnings in the log and the
//! `nixcache_operator_watch_errors_total` metric. `/healthz` does not look at watches: a
//! restart (liveness) cannot fix a missing grant.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A watch failing for longer than this makes the operator unready.
pub const FAILING_BOUND: Duration = Duration::from_secs(60);
/// Name of the NixCache watch: ready only after its first complete list.
pub const NIXCACHE_WATCH: &str = "nixcaches";
/// While a watch keeps failing, at most one warning per this interval (the rest at debug).
const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// The controller's watches, shared by the controller and the admin server.
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    controlling: bool,
    watches: BTreeMap<String, Watch>,
}

#[derive(Debug, Default)]
struct Watch {
    listed: bool,
    failing_since: Option<Instant>,
    last_error: String,
    last_warning: Option<Instant>,
    errors_since_warning: u64,
}

/// A watch error is worth a warning now: the number of errors it stands for (itself and the
/// ones logged at debug since the last warning).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WarnNow(pub u64);

impl Health {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A controller starts (as leader, or without leader election): its watches start afresh.
    pub fn controller_started(&self) {
        let mut state = self.state();
        state.controlling = true;
        state.watches.clear();
    }

    /// A watch delivered an event. `listed`: it was the end of a complete list. Returns how long
    /// it had been failing, when it just recovered.
    pub fn watch_ok(&self, watch: &str, listed: bool, now: Instant) -> Option<Duration> {
        let mut state = self.state();
        let w = state.watches.entry(watch.to_owned()).or_default();
        w.listed |= listed;
        w.errors_since_warning = 0;
        w.last_warning = None;
        w.failing_since
            .take()
            .map(|since| now.saturating_duration_since(since))
    }

    /// A watch failed with `error`; `Some` when this one should be logged as a warning.
    pub fn watch_failed(&self, watch: &str, error: &str, now: Instant) -> Option<WarnNow> {
        let mut state = self.state();
        let w = state.watches.entry(watch.to_owned()).or_default();
        w.failing_since.get_or_insert(now);
        w.last_error = error.to_owned();
        w.errors_since_warning += 1;
        let due = w
            .last_warning
            .is_none_or(|last| now.saturating_duration_since(last) >= WARN_INTERVAL);
        if !due {
            return None;
        }
        w.last_warning = Some(now);
        Some(WarnNow(std::mem::take(&mut w.errors_since_warning)))
    }

    /// `Ok` when ready, else why not (the body of a 503 from `/readyz`).
    pub fn readiness(&self, now: Instant) -> Result<(), String> {
        let state = self.state();
        if !state.controlling {
            return Ok(());
        }
        let mut problems = Vec::new();
        if !state.watches.get(NIXCACHE_WATCH).is_some_and(|w| w.listed) {
            problems.push("the NixCaches have not been listed yet".to_owned());
        }
        for (name, w) in &state.watches {
            let Some(since) = w.failing_since else { continue };
            let failing = now.saturating_duration_since(since);
            if failing > FAILING_BOUND {
                problems.push(format!(
                    "the watch of {name} has been failing for {}s: {}",
                    failing.as_secs(),
                    w.last_error
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_is_ready_a_controller_once_it_listed_the_nixcaches() {
        let health = Health::default();
        let t0 = Instant::now();
        assert_eq!(health.readiness(t0), Ok(()));
        health.controller_started();
        let why = health.readiness(t0).unwrap_err();
        assert!(why.contains("NixCaches have not been listed"), "{why}");
        health.watch_ok("secrets", true, t0);
        health.watch_ok(NIXCACHE_WATCH, false, t0);
        assert!(health.readiness(t0).is_err(), "a page is not the whole list");
        health.watch_ok(NIXCACHE_WATCH, true, t0);
        assert_eq!(health.readiness(t0), Ok(()));
    }

    #[test]
    fn a_watch_failing_past_the_bound_makes_it_unready_until_it_recovers() {
        let health = Health::default();
        let t0 = Instant::now();
        health.controller_started();
        health.watch_ok(NIXCACHE_WATCH, true, t0);
        assert_eq!(
            health.watch_failed("cronjobs", "403 Forbidden", t0),
            Some(WarnNow(1))
        );
        assert_eq!(
            health.watch_failed("cronjobs", "403 Forbidden", t0 + Duration::from_secs(30)),
            None,
            "one warning a minute"
        );
        assert_eq!(health.readiness(t0 + Duration::from_secs(59)), Ok(()));
        let why = health.readiness(t0 + Duration::from_secs(61)).unwrap_err();
        assert!(
            why.contains("cronjobs has been failing for 61s: 403 Forbidden"),
            "{why}"
        );
        assert_eq!(
            health.watch_failed("cronjobs", "403 Forbidden", t0 + Duration::from_secs(61)),
            Some(WarnNow(2)),
            "the warning counts the errors logged at debug"
        );
        let t1 = t0 + Duration::from_secs(70);
        assert_eq!(
            health.watch_ok("cronjobs", true, t1),
            Some(Duration::from_secs(70))
        );
        assert_eq!(health.readiness(t1), Ok(()));
    }

    #[test]
    fn a_restarted_controller_forgets_the_old_watches() {
        let health = Health::default();
        let t0 = Instant::now();
        health.controller_started();
        health.watch_ok(NIXCACHE_WATCH, true, t0);
        health.watch_failed("cronjobs", "404", t0);
        health.controller_started();
        health.watch_ok(NIXCACHE_WATCH, true, t0);
        assert_eq!(health.readiness(t0 + Duration::from_secs(600)), Ok(()));
    }
}
