//! This replica's lookups and bytes over the last hour, for `/status`: its running totals
//! sampled once a minute (with the cache's size), the last hour being now minus the oldest
//! sample at most an hour old (or, in a younger process, the first).

use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{KindLabels, LookupLabels, LookupResult, Metrics, ObjectKind};

const WINDOW: Duration = Duration::from_secs(3600);

/// Running totals of this process (or their difference over a window).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// narinfo and NAR lookups answered from the cache.
    pub hits: u64,
    /// narinfo and NAR lookups fetched from an upstream (or another replica).
    pub misses: u64,
    pub served_bytes: u64,
    /// NAR bytes received from upstreams.
    pub fetched_bytes: u64,
}

impl Totals {
    fn since(self, earlier: Totals) -> Totals {
        Totals {
            hits: self.hits.saturating_sub(earlier.hits),
            misses: self.misses.saturating_sub(earlier.misses),
            served_bytes: self.served_bytes.saturating_sub(earlier.served_bytes),
            fetched_bytes: self.fetched_bytes.saturating_sub(earlier.fetched_bytes),
        }
    }
}

#[derive(Default)]
pub struct RecentTotals {
    samples: Mutex<VecDeque<(Instant, Totals)>>,
}

impl RecentTotals {
    pub fn sample(&self, at: Instant, totals: Totals) {
        let Ok(mut samples) = self.samples.lock() else {
            return;
        };
        samples.push_back((at, totals));
        while samples.len() > 1
            && samples
                .front()
                .is_some_and(|(t, _)| at.duration_since(*t) > WINDOW)
        {
            samples.pop_front();
        }
    }

    /// `now` minus the oldest sample kept; all of `now` before the first sample.
    pub fn last_hour(&self, now: Totals) -> Totals {
        let oldest = self.samples.lock().ok().and_then(|s| s.front().map(|(_, t)| *t));
        now.since(oldest.unwrap_or_default())
    }
}

impl Metrics {
    /// This process's running totals.
    pub fn totals(&self) -> Totals {
        // Read, never created: asking must not add series to /metrics.
        let lookups = |result| {
            [ObjectKind::Narinfo, ObjectKind::Nar]
                .into_iter()
                .map(|kind| {
                    self.lookups
                        .get(&LookupLabels { kind, result })
                        .map_or(0, |c| c.get())
                })
                .sum()
        };
        Totals {
            hits: lookups(LookupResult::Hit),
            misses: lookups(LookupResult::Miss),
            served_bytes: [
                ObjectKind::Narinfo,
                ObjectKind::Nar,
                ObjectKind::Listing,
                ObjectKind::Log,
                ObjectKind::BuildTrace,
            ]
            .into_iter()
            .map(|kind| self.served_bytes.get(&KindLabels { kind }).map_or(0, |c| c.get()))
            .sum(),
            fetched_bytes: self.fetched_total.get(),
        }
    }

    /// Samples the running totals for [`RecentTotals::last_hour`].
    pub fn sample_recent(&self) {
        self.recent.sample(Instant::now(), self.totals());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn totals(n: u64) -> Totals {
        Totals {
            hits: n,
            misses: n / 2,
            served_bytes: n * 10,
            fetched_bytes: n * 3,
        }
    }

    #[test]
    fn the_last_hour_is_now_minus_the_oldest_sample_within_it() {
        let recent = RecentTotals::default();
        assert_eq!(
            recent.last_hour(totals(7)),
            totals(7),
            "no sample yet: everything"
        );
        let start = Instant::now();
        for minute in 0..=90u64 {
            recent.sample(start + Duration::from_secs(minute * 60), totals(minute * 100));
        }
        // Samples from minute 30 on are at most an hour old at minute 90.
        assert_eq!(recent.last_hour(totals(9000)), totals(9000).since(totals(3000)));
        assert_eq!(recent.samples.lock().unwrap().len(), 61);
    }
}
