//! `serve --gc-schedule "<cron>"`: the same collection as `nixcache gc`, run in-process on a
//! standard five-field cron schedule (UTC). Replicas that all have a schedule take turns: the GC
//! lease lets one run at a time, and the others log that they found it busy.

use std::{future::Future, str::FromStr, time::Duration};

use chrono::Utc;

use super::{GcError, GcReport};
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

/// Runs `collect` at every time of `schedule` until the process stops (a run under way is
/// finished first: it begins by writing the access times this process holds).
pub async fn run<F, Fut>(schedule: Schedule, stop: Stopping, mut collect: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<GcReport, GcError>>,
{
    while let Some(wait) = schedule.until_next() {
        if !stop.pause(wait).await {
            return;
        }
        match collect().await {
            Ok(report) => tracing::info!(
                narinfos = report.narinfos_evicted,
                nars = report.nars_deleted,
                freed = report.bytes_freed,
                size = report.size_after(),
                "scheduled GC: {}",
                report.to_string().replace('\n', "; ")
            ),
            Err(GcError::Busy { holder }) => {
                tracing::info!(%holder, "scheduled GC skipped: another run is in progress")
            }
            Err(err) => tracing::error!(error = %err, "scheduled GC failed"),
        }
    }
    tracing::warn!("the GC schedule has no next time; scheduled GC stops");
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
        let err = "every hour".parse::<Schedule>().unwrap_err();
        assert!(err.contains("invalid cron schedule \"every hour\""), "{err}");
    }
}
