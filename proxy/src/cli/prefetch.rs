//! Prefetching (`serve`): what is fetched ahead of clients, and how much.

use clap::{Args, ValueEnum};

use crate::{
    cache::{PrefetchMode, PrefetchOptions},
    units::parse_size,
};

/// What `--prefetch` turns on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrefetchArg {
    Off,
    Narinfo,
    Nar,
}

#[derive(Debug, Clone, Args)]
pub struct PrefetchArgs {
    /// What is fetched ahead of clients: `narinfo` looks up the narinfos of the references of
    /// each narinfo a client GETs; `nar` also downloads the NARs of a closure once its client
    /// asks for the first of them (a client that only looks, `nix path-info`, downloads
    /// nothing); `off`.
    #[arg(long, env = "NIXCACHE_PREFETCH", value_enum, default_value_t = PrefetchArg::Nar)]
    pub prefetch: PrefetchArg,

    /// Levels of references whose narinfos are looked up ahead of a client.
    #[arg(long, env = "NIXCACHE_PREFETCH_DEPTH", default_value_t = 4)]
    pub prefetch_depth: u32,

    /// Narinfos one client request may have looked up ahead, and paths of one closure whose
    /// NARs are prefetched.
    #[arg(long, env = "NIXCACHE_PREFETCH_PATHS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub prefetch_paths: u32,

    /// A NAR file larger than this is not prefetched: it waits until a client asks for it
    /// (50G, 500M, bytes).
    #[arg(long, env = "NIXCACHE_PREFETCH_NAR_MAX", default_value = "256M", value_parser = parse_size)]
    pub prefetch_nar_max: u64,

    /// NAR bytes prefetched for one closure at most (50G, 500M, bytes).
    #[arg(long, env = "NIXCACHE_PREFETCH_BYTES", default_value = "4G", value_parser = parse_size)]
    pub prefetch_bytes: u64,

    /// Narinfo lookups ahead of clients at once, and NAR prefetches at once (each); NAR
    /// prefetches also take only fill slots and temp bytes clients leave spare (a quarter of
    /// --max-fills and --max-fill-bytes is always theirs).
    #[arg(long, env = "NIXCACHE_PREFETCH_CONCURRENCY", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub prefetch_concurrency: u32,
}

impl PrefetchArgs {
    pub fn options(&self) -> PrefetchOptions {
        let mode = match self.prefetch {
            PrefetchArg::Off => PrefetchMode::Off,
            PrefetchArg::Narinfo => PrefetchMode::Narinfo,
            PrefetchArg::Nar => PrefetchMode::Nar,
        };
        PrefetchOptions {
            mode,
            depth: self.prefetch_depth,
            paths: self.prefetch_paths as usize,
            nar_max: self.prefetch_nar_max,
            walk_bytes: self.prefetch_bytes,
            concurrency: self.prefetch_concurrency as usize,
        }
    }
}
