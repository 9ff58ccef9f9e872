//! `nixcache warm`: what to fetch into a running cache, and from where.

use std::time::Duration;

use clap::Args;
use nixcache_protocol::StorePath;

use crate::warm::WarmOptions;

#[derive(Debug, Clone, Args)]
pub struct WarmArgs {
    /// The running cache to warm (any replica, or the Service in front of them).
    #[arg(long, env = "NIXCACHE_URL", default_value = "http://127.0.0.1:8501")]
    pub url: String,

    /// Requests at once.
    #[arg(long, env = "NIXCACHE_WARM_CONCURRENCY", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,

    /// Fetch the narinfos only: the NARs are left for the clients that ask.
    #[arg(long)]
    pub narinfos_only: bool,

    /// Bound on each request, its body included (a large NAR takes a while).
    #[arg(long, env = "NIXCACHE_WARM_TIMEOUT", default_value = "30m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Store paths (`/nix/store/<hash>-<name>`) whose closures are fetched.
    #[arg(required = true, value_parser = parse_store_path)]
    pub paths: Vec<StorePath>,
}

impl WarmArgs {
    pub fn options(&self) -> WarmOptions {
        WarmOptions {
            url: self.url.clone(),
            paths: self.paths.clone(),
            concurrency: self.concurrency as usize,
            narinfos_only: self.narinfos_only,
            timeout: self.timeout,
            direct: false,
        }
    }
}

fn parse_store_path(text: &str) -> Result<StorePath, String> {
    StorePath::from_absolute(text).map_err(|e| format!("{text}: {e} (expected /nix/store/<hash>-<name>)"))
}
