//! Garbage collection and the other upkeep of stored data: `nixcache gc`, and what `serve` runs
//! in-process (GC, the scrub, fsck).

use std::{path::PathBuf, time::Duration};

use clap::Args;

use super::{BackendArgs, LogFormat};
use nixcache_protocol::StorePath;

use crate::{pins::PinRequest, schedule::Schedule, units::parse_size};

/// `/nix/store/<hash>-<name>`.
pub fn parse_store_path(s: &str) -> Result<StorePath, String> {
    StorePath::from_absolute(s.trim()).map_err(|e| e.to_string())
}

impl ServeGcArgs {
    /// The declared pins: --pin's paths alone, --pin-closure's with their closures (a path named
    /// by both is a closure pin).
    pub fn declared_pins(&self) -> Vec<PinRequest> {
        let closures = self.pin_closures.iter().map(|path| PinRequest {
            path: path.clone(),
            closure: true,
        });
        let alone = self
            .pins
            .iter()
            .filter(|p| !self.pin_closures.contains(p))
            .map(|path| PinRequest {
                path: path.clone(),
                closure: false,
            });
        // One pin per hash (the first name given for it wins).
        let mut seen = std::collections::HashSet::new();
        closures
            .chain(alone)
            .filter(|p| seen.insert(*p.path.hash()))
            .collect()
    }
}

/// What `serve` keeps up in-process: garbage collection, the scrub and fsck.
#[derive(Debug, Clone, Args)]
pub struct ServeGcArgs {
    /// Size limit of the stored NARs (50G, 500M, bytes; units are powers of 1024): GC evicts
    /// least-recently-used entries down to it, every hour unless --gc-schedule says otherwise.
    #[arg(long, env = "NIXCACHE_MAX_SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,

    /// When to collect, as a five-field cron expression in UTC (e.g. "0 */6 * * *");
    /// needs --max-size [default: "0 * * * *" when --max-size is set].
    #[arg(long, env = "NIXCACHE_GC_SCHEDULE")]
    pub gc_schedule: Option<Schedule>,

    /// Entries accessed more recently than this are never evicted.
    #[arg(long, env = "NIXCACHE_GC_KEEP_RECENT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub gc_keep_recent: Duration,

    /// Evicted narinfos are kept this long before they are deleted (default: Nix's
    /// narinfo-cache-positive-ttl): a client that cached one meanwhile still finds its NAR,
    /// fetched again, or hears 410 Gone for an uploaded one.
    #[arg(long, env = "NIXCACHE_GC_KEEP_EVICTED", default_value = "30days", value_parser = humantime::parse_duration)]
    pub gc_keep_evicted: Duration,

    /// Never evict a path a client uploaded (nor its uploaded logs): it exists nowhere else.
    #[arg(long, env = "NIXCACHE_GC_KEEP_UPLOADS")]
    pub gc_keep_uploads: bool,

    /// Store paths GC never evicts (repeat the flag), kept pinned as declared pins: each
    /// replica makes the declared pins exactly these and --pin-closure's when it starts.
    #[arg(long = "pin", env = "NIXCACHE_PINS", value_delimiter = ',', value_name = "STORE-PATH", value_parser = parse_store_path)]
    pub pins: Vec<StorePath>,

    /// Like --pin, with everything the path references (its closure, as far as it is cached).
    #[arg(long = "pin-closure", env = "NIXCACHE_PIN_CLOSURES", value_delimiter = ',', value_name = "STORE-PATH", value_parser = parse_store_path)]
    pub pin_closures: Vec<StorePath>,

    /// Make the declared pins exactly --pin's and --pin-closure's even when neither is given
    /// (which then removes every declared pin). Without it and without them, a `serve` leaves
    /// the declared pins as they are (one started by hand on a shared database drops none).
    #[arg(long, env = "NIXCACHE_SYNC_PINS")]
    pub sync_pins: bool,

    /// Re-hash stored NARs in the background at most this fast (bytes per second; 0 turns it
    /// off): files damaged on disk or in the bucket are dropped and fetched again.
    #[arg(long, env = "NIXCACHE_SCRUB_RATE", default_value = "8M", value_parser = parse_size)]
    pub scrub_rate: u64,

    /// Pause between two scrub passes (the first starts within 10 minutes).
    #[arg(long, env = "NIXCACHE_SCRUB_INTERVAL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub scrub_interval: Duration,

    /// Run `fsck --repair` in-process at these times, a five-field cron expression in UTC (e.g.
    /// "30 4 * * 0"); off by default. Its results go to the log and the nixcache_fsck_* metrics.
    #[arg(long, env = "NIXCACHE_FSCK_SCHEDULE")]
    pub fsck_schedule: Option<Schedule>,

    /// With --fsck-schedule: re-hash every stored NAR's content too (reads them all).
    #[arg(long, env = "NIXCACHE_FSCK_VERIFY")]
    pub fsck_verify: bool,
}

#[derive(Debug, Clone, Args)]
pub struct GcArgs {
    /// TOML or YAML file with the same keys as these flags (flag > env > file > default).
    #[arg(long, env = "NIXCACHE_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub backend: BackendArgs,

    /// Evict until the stored NARs take at most this (50G, 500M, bytes; units are powers of 1024).
    #[arg(long, env = "NIXCACHE_MAX_SIZE", value_parser = parse_size)]
    pub max_size: u64,

    /// Entries accessed more recently than this are never evicted (what replicas just served,
    /// and may still hold in memory for --memory-cache-ttl).
    #[arg(long, env = "NIXCACHE_GC_KEEP_RECENT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub gc_keep_recent: Duration,

    /// Evicted narinfos are kept this long before they are deleted (default: Nix's
    /// narinfo-cache-positive-ttl): a client that cached one meanwhile still finds its NAR,
    /// fetched again, or hears 410 Gone for an uploaded one.
    #[arg(long, env = "NIXCACHE_GC_KEEP_EVICTED", default_value = "30days", value_parser = humantime::parse_duration)]
    pub gc_keep_evicted: Duration,

    /// Never evict a path a client uploaded (nor its uploaded logs): it exists nowhere else.
    #[arg(long, env = "NIXCACHE_GC_KEEP_UPLOADS")]
    pub gc_keep_uploads: bool,

    /// Report what would be evicted; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Log output format (the level comes from RUST_LOG, default info).
    #[arg(long, env = "NIXCACHE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}
