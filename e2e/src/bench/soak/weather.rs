//! The soak's flaky upstream: the big NAR always comes slowly (so a client hanging up on it
//! leaves a download that is abandoned, never finished), and every other path gets a fault
//! that changes every [`PHASE`], in a cycle: calm, slow answers, `500`s, `503`s for narinfos,
//! NAR bodies cut in half, slow NAR bodies, corrupt NAR bodies.

use std::time::Duration;

use crate::{Faults, TestUpstream};

/// How long each kind of weather lasts.
pub const PHASE: Duration = Duration::from_secs(20);
/// The big NAR's upstream rate: 64 MiB take 4 s, more than a hung-up fill waits (2 s) before
/// it is cancelled with more than `--finish-abandoned-below` (16 MiB) left.
const BIG_RATE: u64 = 16 << 20;

pub struct Weather {
    big: Faults,
    phases: Vec<(&'static str, Faults)>,
}

impl Weather {
    /// The cycle, with `big_nar` (`/nar/<file>`) always slow.
    pub fn new(big_nar: &str) -> Weather {
        let nars = || Some("/nar/".to_string());
        let phases = vec![
            ("calm", Faults::default()),
            (
                "+300 ms",
                Faults {
                    delay: Duration::from_millis(300),
                    ..Faults::default()
                },
            ),
            (
                "500 first",
                Faults {
                    fail_first_n: 1,
                    ..Faults::default()
                },
            ),
            (
                "503 narinfos",
                Faults {
                    fail_first_n: 3,
                    fail_status: 503,
                    only_paths_with_suffix: Some(".narinfo".into()),
                    ..Faults::default()
                },
            ),
            (
                "NARs cut",
                Faults {
                    truncate: true,
                    only_paths_with_prefix: nars(),
                    ..Faults::default()
                },
            ),
            (
                "NARs 1 MiB/s",
                Faults {
                    rate_bytes_per_s: 1 << 20,
                    only_paths_with_prefix: nars(),
                    ..Faults::default()
                },
            ),
            (
                "NARs corrupt",
                Faults {
                    corrupt: true,
                    only_paths_with_prefix: nars(),
                    ..Faults::default()
                },
            ),
        ];
        let big = Faults {
            rate_bytes_per_s: BIG_RATE,
            only_paths_with_prefix: Some(big_nar.to_string()),
            ..Faults::default()
        };
        Weather { big, phases }
    }

    /// The name of phase `n` (counted from the start, cycling).
    pub fn name(&self, n: usize) -> &'static str {
        self.phases[n % self.phases.len()].0
    }

    /// Puts phase `n` in force.
    pub fn apply(&self, upstream: &TestUpstream, n: usize) {
        let phase = self.phases[n % self.phases.len()].1.clone();
        upstream.set_fault_rules(vec![self.big.clone(), phase]);
    }

    /// The cycle, for the report.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.phases.iter().map(|(name, _)| *name).collect();
        format!(
            "{} s each, in a cycle: {}; the big NAR always at {} MiB/s",
            PHASE.as_secs(),
            names.join(", "),
            BIG_RATE >> 20
        )
    }
}
