//! `nixcache warm`: what to fetch into a running cache, and from where.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;

use clap::Args;
use nixcache_protocol::StorePath;

use crate::warm::{Authorization, WarmOptions};

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

    /// For a private cache: a file whose first line is `USER:PASSWORD` (sent as HTTP Basic) or
    /// a token (sent as a Bearer token), a read or upload credential of the cache.
    #[arg(long, env = "NIXCACHE_WARM_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,

    /// Store paths (`/nix/store/<hash>-<name>`) whose closures are fetched.
    #[arg(required = true, value_parser = parse_store_path)]
    pub paths: Vec<StorePath>,
}

impl WarmArgs {
    pub fn options(&self) -> anyhow::Result<WarmOptions> {
        let authorization = match &self.auth_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading --auth-file {}", path.display()))?;
                let authorization = Authorization::from_file_text(&text);
                Some(
                    authorization
                        .with_context(|| format!("--auth-file {} holds no credential", path.display()))?,
                )
            }
            None => None,
        };
        Ok(WarmOptions {
            url: self.url.clone(),
            paths: self.paths.clone(),
            concurrency: self.concurrency as usize,
            narinfos_only: self.narinfos_only,
            timeout: self.timeout,
            direct: false,
            authorization,
        })
    }
}

fn parse_store_path(text: &str) -> Result<StorePath, String> {
    StorePath::from_absolute(text).map_err(|e| format!("{text}: {e} (expected /nix/store/<hash>-<name>)"))
}
