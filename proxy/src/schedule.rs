//! Work a serving process runs on a standard five-field cron schedule (UTC): `serve
//! --gc-schedule` (the collection `nixcache gc` does) and `serve --fsck-schedule`. Replicas that
//! all have a schedule take turns: each job's lease lets one run at a time, and the others log
//! that they found it busy.

use std::{future::Future, str::FromStr, time::Duration};

use chrono::Utc;

use crate::tasks::Stopping;

/// A parsed cron expression such as `0 */6 * * *`.
#[derive(Clone, Debug)]
pub struct Schedule(croner::Cron);

impl FromStr for Schedule {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        croner::Cron::from_str(text.trim())
            .map(Self)
            .map_err(|e| format!("invalid cron schedule {text:?} ({e}): use five fields (or six, seconds first), e.g. \"0 */6 * * *\""))
    }
}

impl Schedule {
    /// Time until the next run.
    pub fn until_next(&self) -> Option<Duration> {
        let now = Utc::now();
        let next = self.0.find_next_occurrence(&now, false).ok()?;
        (next - now).to_std().ok()
    }
}

/// Runs `job` at every time of `schedule` until the process stops. A run under way is awaited
/// (GC's begins by writing the access times this process holds); a job that must stop sooner
/// watches `stop` itself. `what` names the job in the log.
pub async fn run<F, Fut>(schedule: Schedule, stop: Stopping, what: &'static str, mut job: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    while let Some(wait) = schedule.until_next() {
        if !stop.pause(wait).await {
            return;
        }
        job().await;
    }
    tracing::warn!("the {what} schedule has no next time; scheduled {what} stops");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn schedules_parse() {
        let every_minute: Schedule = "* * * * *".parse().unwrap_or_else(|e| panic!("{e}"));
        let wait = every_minute.until_next().unwrap_or_default();
        assert!(wait <= Duration::from_secs(60) && !wait.is_zero(), "{wait:?}");
        assert!("0 */6 * * *".parse::<Schedule>().is_ok());
        // The nicknames the NixCache CRD takes (its SCHEDULE_PATTERN), as Kubernetes does.
        for nickname in ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"] {
            assert!(nickname.parse::<Schedule>().is_ok(), "{nickname}");
        }
        let err = "every hour".parse::<Schedule>().unwrap_err();
        assert!(err.contains("invalid cron schedule \"every hour\""), "{err}");
    }
}
