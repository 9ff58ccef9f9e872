//! How a replica on S3 serves NAR hits: from a local hot tier when it holds them, and
//! optionally by redirecting clients to the bucket.

use std::{path::PathBuf, time::Duration};

use clap::Args;

use crate::units::parse_size;

#[derive(Debug, Clone, Args)]
pub struct HitArgs {
    /// A local directory where a replica on S3 keeps NARs it served from the bucket, so later
    /// hits are read at disk speed; verified against their FileHash, least recently used
    /// removed first, emptied at every start. Off when unset; needs --storage s3.
    #[arg(long, env = "NIXCACHE_HOT_TIER_DIR")]
    pub hot_tier_dir: Option<PathBuf>,

    /// The hot tier's bound, copies under way included; a NAR above an eighth of it is not
    /// kept (50G, 500M, bytes).
    #[arg(long, env = "NIXCACHE_HOT_TIER_SIZE", default_value = "10G", value_parser = parse_size)]
    pub hot_tier_size: u64,

    /// Answer a NAR hit that is not in the hot tier with a 307 to a presigned URL of the
    /// object, for clients that reach the bucket themselves; narinfos stay proxied. Needs
    /// --storage s3.
    #[arg(long, env = "NIXCACHE_S3_REDIRECT")]
    pub s3_redirect: bool,

    /// How long those URLs are valid: a client must start its download within it.
    #[arg(long, env = "NIXCACHE_S3_REDIRECT_EXPIRY", default_value = "5m", value_parser = humantime::parse_duration)]
    pub s3_redirect_expiry: Duration,
}
