//! What an fsck run found and did, and the exit status that sums it up.

use std::{fmt, time::Duration};

use super::FsckOptions;
use crate::units::format_size;

/// Lost paths named in the report; more are only counted.
const LOST_NAMED: usize = 100;

/// How many, and how many bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    pub bytes: u64,
}

impl Tally {
    pub(super) fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }
}

#[derive(Clone, Debug, Default)]
pub struct FsckReport {
    pub verify: bool,
    pub repair: bool,
    pub dry_run: bool,
    /// Stored NARs checked, with their recorded sizes.
    pub nars: Tally,
    /// Bytes read and re-hashed (`verify`).
    pub verified_bytes: u64,
    pub side_files: u64,
    pub uploads: u64,
    pub objects: Tally,
    /// Rows (NAR, listing or log) whose object is gone.
    pub missing: Tally,
    /// Rows whose object has another size.
    pub wrong_size: Tally,
    /// NARs whose content does not hash to what was recorded (`verify`).
    pub damaged: Tally,
    /// Objects no row records (older than `min_age`).
    pub orphans: Tally,
    /// Uploaded NARs whose narinfo never came, past the deadline (GC sweeps them too).
    pub stale_uploads: Tally,
    /// Uploaded narinfos whose NAR is not stored: nothing can fetch it again.
    pub narinfos_without_nar: u64,
    /// Objects under names the cache never writes: reported, never deleted.
    pub unknown: Tally,
    /// Listings and logs no row records: left alone (overwritten when stored again).
    pub side_orphans: Tally,
    /// Unrecorded objects left alone for being younger than `min_age`.
    pub young: u64,
    /// Problems repaired (or found resolved when looked at again under the NAR's lease).
    pub repaired: u64,
    /// Repairs skipped because a fill, upload or GC held the NAR's lease.
    pub busy: u64,
    /// Checks that failed (storage or read errors): looked at by the next run.
    pub unreadable: u64,
    /// Uploaded paths (and uploaded listings or logs) that exist nowhere else and are gone.
    pub lost: Vec<String>,
    pub lost_count: u64,
    /// Repairs stopped: too many NARs missing or the wrong size, or uploaded narinfos without
    /// their NAR.
    pub braked: bool,
    /// Orphans kept: too many next to the recorded objects.
    pub orphans_kept: bool,
    pub elapsed: Duration,
}

/// What a run's exit status says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was wrong.
    Clean,
    /// Problems were found and every one repaired.
    Repaired,
    /// Problems remain: not repaired (no `--repair`, a dry run, busy, stopped), unreadable, or
    /// uploaded paths lost.
    ProblemsLeft,
}

impl Outcome {
    /// 0, 2 and 3 (1 is left to a run that failed).
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Clean => 0,
            Self::Repaired => 2,
            Self::ProblemsLeft => 3,
        }
    }
}

impl FsckReport {
    pub(super) fn new(options: &FsckOptions) -> Self {
        Self {
            verify: options.verify,
            repair: options.repair,
            dry_run: options.dry_run,
            ..Self::default()
        }
    }

    /// Everything found wrong.
    pub fn problems(&self) -> u64 {
        [
            self.missing,
            self.wrong_size,
            self.damaged,
            self.orphans,
            self.stale_uploads,
        ]
        .iter()
        .map(|t| t.count)
        .sum::<u64>()
            + self.narinfos_without_nar
    }

    pub fn outcome(&self) -> Outcome {
        let problems = self.problems();
        if problems == 0 && self.unreadable == 0 {
            Outcome::Clean
        } else if self.repaired >= problems && self.unreadable == 0 && self.lost_count == 0 {
            Outcome::Repaired
        } else {
            Outcome::ProblemsLeft
        }
    }

    pub(super) fn lose(&mut self, what: String) {
        self.lost_count += 1;
        if self.lost.len() < LOST_NAMED {
            self.lost.push(what);
        }
    }

    /// MiB/s read and re-hashed.
    pub fn verify_rate(&self) -> f64 {
        self.verified_bytes as f64 / (1 << 20) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for FsckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = if self.dry_run { "dry run: " } else { "" };
        write!(
            f,
            "{prefix}checked {} stored NARs ({}), {} listings and logs, {} pending uploads and {} objects in storage in {:.2} s",
            self.nars.count,
            format_size(self.nars.bytes),
            self.side_files,
            self.uploads,
            self.objects.count,
            self.elapsed.as_secs_f64(),
        )?;
        if self.verify {
            write!(
                f,
                "; re-hashed {} ({:.0} MiB/s)",
                format_size(self.verified_bytes),
                self.verify_rate()
            )?;
        }
        let lines = [
            (self.missing, "objects missing from storage"),
            (self.wrong_size, "objects of the wrong size"),
            (self.damaged, "NARs whose content does not match their hashes"),
            (self.orphans, "objects no row records"),
            (self.stale_uploads, "uploads whose narinfo never came"),
            (
                self.unknown,
                "objects under names nixcache does not write (left alone)",
            ),
        ];
        for (tally, what) in lines.iter().filter(|(t, _)| t.count > 0) {
            write!(f, "\n  {what}: {} ({})", tally.count, format_size(tally.bytes))?;
        }
        if self.narinfos_without_nar > 0 {
            write!(
                f,
                "\n  uploaded narinfos whose NAR is not stored: {}",
                self.narinfos_without_nar
            )?;
        }
        self.fmt_outcome(f, prefix)
    }
}

impl FsckReport {
    fn fmt_outcome(&self, f: &mut fmt::Formatter<'_>, prefix: &str) -> fmt::Result {
        let problems = self.problems();
        if problems == 0 {
            write!(f, "\n{prefix}no problems found")?;
        } else if self.repair && self.dry_run {
            write!(f, "\n{prefix}{problems} problems; nothing changed")?;
        } else if self.repair {
            write!(f, "\n{problems} problems, {} repaired", self.repaired)?;
        } else {
            write!(f, "\n{problems} problems; run with --repair to fix them")?;
        }
        if self.busy > 0 {
            write!(
                f,
                "\n{} repairs skipped: the NAR was being fetched or collected (run again)",
                self.busy
            )?;
        }
        if self.unreadable > 0 {
            write!(
                f,
                "\n{} objects could not be checked (see the log; run again)",
                self.unreadable
            )?;
        }
        if self.braked {
            write!(f, "\nrepairs stopped: many stored NARs are missing or the wrong size (is this the cache's storage?)")?;
        }
        if self.orphans_kept {
            write!(f, "\norphans kept: many objects no row records next to those rows do (is this the cache's database, and the storage only the cache's?)")?;
        }
        if self.young > 0 {
            write!(
                f,
                "\n{} unrecorded objects left alone for being recent",
                self.young
            )?;
        }
        if self.lost_count > 0 {
            write!(
                f,
                "\n{} uploaded paths exist nowhere else and are lost (push them again):",
                self.lost_count
            )?;
            for path in &self.lost {
                write!(f, "\n  {path}")?;
            }
            if self.lost_count > self.lost.len() as u64 {
                write!(f, "\n  … and {} more", self.lost_count - self.lost.len() as u64)?;
            }
        }
        Ok(())
    }
}
