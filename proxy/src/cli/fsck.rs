//! `nixcache fsck`.

use std::{path::PathBuf, time::Duration};

use clap::Args;

use super::{BackendArgs, LogFormat};
use crate::fsck::FsckOptions;

#[derive(Debug, Clone, Args)]
pub struct FsckArgs {
    /// TOML or YAML file with the same keys as these flags (flag > env > file > default).
    #[arg(long, env = "NIXCACHE_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub backend: BackendArgs,

    /// Also read every stored NAR and check its content: FileHash, and NarHash and NarSize of
    /// what it decompresses to (without it, only that each object is there with its size).
    #[arg(long)]
    pub verify: bool,

    /// Repair what is wrong: delete broken and unrecorded objects and their rows, so the next
    /// request fetches those NARs again (an uploaded path that is lost is evicted and named).
    #[arg(long)]
    pub repair: bool,

    /// With --repair: report what would be repaired, change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Objects that no row records and are younger than this are left alone: a fill or an
    /// upload may be about to record them (at least 1m).
    #[arg(long, env = "NIXCACHE_FSCK_MIN_AGE", default_value = "1h", value_parser = parse_min_age)]
    pub min_age: Duration,

    /// Objects checked at once (with --verify, NARs decompressed at once).
    #[arg(long, env = "NIXCACHE_FSCK_JOBS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub jobs: u32,

    /// Log output format (the level comes from RUST_LOG, default info).
    #[arg(long, env = "NIXCACHE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl FsckArgs {
    pub fn options(&self) -> FsckOptions {
        FsckOptions {
            verify: self.verify,
            repair: self.repair,
            dry_run: self.dry_run,
            min_age: self.min_age,
            jobs: self.jobs as usize,
        }
    }
}

/// A `--min-age` of at least a minute: an object is stored a moment before its row.
fn parse_min_age(text: &str) -> Result<Duration, String> {
    let age = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if age < Duration::from_secs(60) {
        return Err(format!(
            "{text} is too short: at least 1m (an object is stored just before its row)"
        ));
    }
    Ok(age)
}
