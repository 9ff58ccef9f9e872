//! Bounds on NAR fills (upstream downloads and copies from another replica): how many run at
//! once, how many temp bytes they may take, and what happens to one whose clients all left.

use clap::Args;

use crate::units::parse_size;

#[derive(Debug, Clone, Args)]
pub struct FillArgs {
    /// Most NAR fills (upstream downloads and copies from another replica) running at once in
    /// this process; a miss beyond it waits a few seconds for a slot, then gets 503 with
    /// Retry-After. Joining a fill already running needs no slot.
    #[arg(long, env = "NIXCACHE_MAX_FILLS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_fills: u32,

    /// Most bytes the fills in progress may write to temp files, counting each at its largest
    /// (its FileSize); a fill that would go over it waits, then gets 503 like --max-fills. One
    /// fill alone is always admitted (50G, 500M, bytes) [default: a quarter of --max-size,
    /// else no limit].
    #[arg(long, env = "NIXCACHE_MAX_FILL_BYTES", value_parser = parse_size)]
    pub max_fill_bytes: Option<u64>,

    /// A fill whose clients all left (for 2 s) runs on only when at most this much is left to
    /// download, so a client that comes back finds the NAR stored; a larger rest is cancelled
    /// (50G, 500M, bytes).
    #[arg(long, env = "NIXCACHE_FINISH_ABANDONED_BELOW", default_value = "16M", value_parser = parse_size)]
    pub finish_abandoned_below: u64,
}

impl FillArgs {
    /// `--max-fill-bytes`, else a quarter of `max_size` (the stored NARs' limit), else none.
    pub fn max_fill_bytes(&self, max_size: Option<u64>) -> Option<u64> {
        self.max_fill_bytes.or(max_size.map(|size| size / 4))
    }
}
