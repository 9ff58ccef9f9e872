//! Where a process finds the cache: the data dir, the metadata database and the NAR storage.
//! `serve` and `gc` take the same flags.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::{
    storage::{ReadAhead, S3Config},
    units::parse_size,
};

#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// Directory for the NARs, the SQLite database, temporary files and the generated key.
    #[arg(long, env = "NIXCACHE_DATA_DIR", default_value = "./nixcache-data")]
    pub data_dir: PathBuf,

    /// Metadata database: sqlite://PATH, postgres://… or mysql://… (mariadb://…)
    /// [default: sqlite://<data-dir>/db.sqlite].
    #[arg(long, env = "NIXCACHE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<DatabaseUrl>,

    #[command(flatten)]
    pub storage: StorageArgs,
}

impl BackendArgs {
    /// The database URL, defaulting to SQLite inside the data dir.
    pub fn database_url(&self) -> String {
        database_url(&self.data_dir, self.database_url.as_ref())
    }
}

/// `url`, or SQLite inside `data_dir`.
pub(super) fn database_url(data_dir: &std::path::Path, url: Option<&DatabaseUrl>) -> String {
    match url {
        Some(url) => url.0.clone(),
        None => format!("sqlite://{}/db.sqlite", data_dir.display()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageKind {
    /// `<data-dir>/nar`.
    Local,
    /// An S3 bucket, shared by every replica.
    S3,
}

/// Where NARs are kept. S3 credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID /
/// AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity / IRSA, ECS, IMDS), never from flags.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Where NARs are stored (temporary files stay in the data dir either way).
    #[arg(
        long = "storage",
        env = "NIXCACHE_STORAGE",
        value_enum,
        default_value = "local"
    )]
    pub kind: StorageKind,

    /// S3 bucket; required with --storage s3.
    #[arg(long, env = "NIXCACHE_S3_BUCKET")]
    pub s3_bucket: Option<String>,

    /// S3 endpoint for MinIO, Ceph, Garage, ... [default: AWS].
    #[arg(long, env = "NIXCACHE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// S3 region [default: from the AWS config chain, else us-east-1].
    #[arg(long, env = "NIXCACHE_S3_REGION")]
    pub s3_region: Option<String>,

    /// Address the bucket as ENDPOINT/BUCKET (most self-hosted servers need this).
    #[arg(long, env = "NIXCACHE_S3_PATH_STYLE")]
    pub s3_path_style: bool,

    /// Prefix for object names: objects go to PREFIX/nar/FILE.
    #[arg(long, env = "NIXCACHE_S3_PREFIX", default_value = "")]
    pub s3_prefix: String,

    /// GETs in flight for one read of a large object (a NAR hit): its parts are read ahead, in
    /// order, so one download is not held to one S3 stream's speed; 1 reads with one GET.
    #[arg(long, env = "NIXCACHE_S3_PARALLEL_READS", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub s3_parallel_reads: u16,

    /// Size of those parts (at least 1 MiB); a range under two parts is read with one GET.
    #[arg(long, env = "NIXCACHE_S3_READ_PART_SIZE", default_value = "8M", value_parser = parse_size)]
    pub s3_read_part_size: u64,

    /// Memory for parts read ahead, all reads together; a part without room is read in its turn.
    #[arg(long, env = "NIXCACHE_S3_READ_AHEAD_MEMORY", default_value = "64M", value_parser = parse_size)]
    pub s3_read_ahead_memory: u64,
}

impl StorageArgs {
    /// The S3 settings for `--storage s3`, `None` for local storage; refuses S3 flags that
    /// would be ignored, so a forgotten `--storage s3` does not silently fill a local disk.
    pub fn s3_config(&self) -> anyhow::Result<Option<S3Config>> {
        let bucket = self.s3_bucket.as_deref().map(str::trim).filter(|b| !b.is_empty());
        match self.kind {
            StorageKind::Local => {
                let s3_flags = bucket.is_some() || self.s3_endpoint.is_some() || !self.s3_prefix.is_empty();
                anyhow::ensure!(
                    !s3_flags,
                    "--s3-bucket, --s3-endpoint and --s3-prefix need --storage s3"
                );
                Ok(None)
            }
            StorageKind::S3 => {
                let bucket = bucket.ok_or_else(|| {
                    anyhow::anyhow!("--storage s3 needs a bucket: set --s3-bucket or NIXCACHE_S3_BUCKET")
                })?;
                Ok(Some(S3Config {
                    bucket: bucket.to_owned(),
                    endpoint: self.s3_endpoint.clone(),
                    region: self.s3_region.clone(),
                    path_style: self.s3_path_style,
                    prefix: self.s3_prefix.clone(),
                    credentials: None,
                    timeouts: Default::default(),
                    read_ahead: ReadAhead::new(
                        usize::from(self.s3_parallel_reads),
                        self.s3_read_part_size,
                        self.s3_read_ahead_memory,
                    ),
                }))
            }
        }
    }
}

/// A database URL, which may hold a password (`user:pass@`, `?password=`): `Debug` hides it.
#[derive(Clone)]
pub struct DatabaseUrl(pub String);

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::redact::url(&self.0))
    }
}
