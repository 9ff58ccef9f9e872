//! Command line: `nixcache serve | migrate | keygen`. Every flag also reads a `NIXCACHE_*` env var.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::storage::S3Config;

/// The public key of cache.nixos.org, trusted by default.
pub const NIXOS_PUBLIC_KEY: &str = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

#[derive(Debug, Parser)]
#[command(
    name = "nixcache",
    version,
    about = "A caching, verifying proxy for Nix binary caches"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the binary cache protocol, fetching misses from the upstream caches.
    Serve(Box<ServeArgs>),
    /// Apply the database migrations this version needs, then exit (a PostgreSQL/MySQL database
    /// must be migrated before `serve` starts on it; SQLite is migrated by `serve` itself).
    Migrate(MigrateArgs),
    /// Write a new signing key pair in Nix's format (like `nix-store --generate-binary-cache-key`).
    Keygen(KeygenArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML or YAML file with the same keys as these flags (flag > env > file > default).
    #[arg(long, env = "NIXCACHE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address and port to listen on.
    #[arg(long, env = "NIXCACHE_LISTEN", default_value = "0.0.0.0:8501")]
    pub listen: SocketAddr,

    /// Directory for the NARs, the SQLite database, temporary files and the generated key.
    #[arg(long, env = "NIXCACHE_DATA_DIR", default_value = "./nixcache-data")]
    pub data_dir: PathBuf,

    #[command(flatten)]
    pub storage: StorageArgs,

    /// Metadata database: sqlite://PATH, postgres://… or mysql://… (mariadb://…)
    /// [default: sqlite://<data-dir>/db.sqlite].
    #[arg(long, env = "NIXCACHE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<DatabaseUrl>,

    /// Upstream binary cache URL; repeat for several (comma-separated in the env var).
    #[arg(
        long = "upstream",
        env = "NIXCACHE_UPSTREAMS",
        value_delimiter = ',',
        default_value = "https://cache.nixos.org"
    )]
    pub upstreams: Vec<String>,

    /// Public key trusted for upstream narinfos (NAME:BASE64); repeatable, trusted for every upstream.
    #[arg(long = "upstream-public-key", env = "NIXCACHE_UPSTREAM_PUBLIC_KEYS", value_delimiter = ',',
          default_value = NIXOS_PUBLIC_KEY)]
    pub upstream_public_keys: Vec<String>,

    /// Priority advertised in /nix-cache-info (lower is preferred by Nix).
    #[arg(long, env = "NIXCACHE_PRIORITY", default_value_t = 40)]
    pub priority: u32,

    /// Name of the generated signing key [default: the machine's hostname].
    #[arg(long, env = "NIXCACHE_HOSTNAME")]
    pub hostname: Option<String>,

    /// Secret signing key in Nix's format; without it a key is generated once in the data dir.
    #[arg(long, env = "NIXCACHE_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,

    /// netrc file with credentials for upstreams [default: ~/.netrc when it exists].
    #[arg(long, env = "NIXCACHE_NETRC_FILE")]
    pub netrc_file: Option<PathBuf>,

    /// Time allowed to connect to an upstream.
    #[arg(long, env = "NIXCACHE_UPSTREAM_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub upstream_connect_timeout: Duration,

    /// Time allowed for an upstream to answer with response headers.
    #[arg(long, env = "NIXCACHE_UPSTREAM_HEADER_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub upstream_header_timeout: Duration,

    /// Longest pause allowed while an upstream sends a body.
    #[arg(long, env = "NIXCACHE_UPSTREAM_READ_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub upstream_read_timeout: Duration,

    /// How long a narinfo that no upstream has is remembered as missing (0s disables).
    #[arg(long, env = "NIXCACHE_NEGATIVE_TTL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub negative_ttl: Duration,

    /// Memory for hot narinfos and NAR sizes, so warm hits skip the database (bytes).
    #[arg(long, env = "NIXCACHE_MEMORY_CACHE_BYTES", default_value_t = 32 << 20)]
    pub memory_cache_bytes: u64,

    /// How long an in-memory entry is trusted before the database is asked again.
    #[arg(long, env = "NIXCACHE_MEMORY_CACHE_TTL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub memory_cache_ttl: Duration,

    /// URL other replicas use to reach this one, to stream a download it is doing
    /// (`http://$POD_IP:8501` in a cluster) [default: from --listen, else the hostname's address].
    #[arg(long, env = "NIXCACHE_ADVERTISE_URL")]
    pub advertise_url: Option<String>,

    /// How long a replica's claim on a download lasts without renewal: how soon another replica
    /// takes over the download of one that died.
    #[arg(long, env = "NIXCACHE_LEASE_TTL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,

    /// Log output format (the level comes from RUST_LOG, default info).
    #[arg(long, env = "NIXCACHE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Metadata database: sqlite://PATH, postgres://USER:PASSWORD@HOST/DB or mysql://… (mariadb://…).
    #[arg(long, env = "NIXCACHE_DATABASE_URL", hide_env_values = true)]
    pub database_url: DatabaseUrl,

    /// Log output format (the level comes from RUST_LOG, default info).
    #[arg(long, env = "NIXCACHE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// Key name, conventionally `HOST-1` (it appears in every signature).
    pub name: String,
    /// Where to write the secret key (mode 0600; an existing file is never overwritten).
    #[arg(long, env = "NIXCACHE_SECRET_KEY_FILE")]
    pub secret_key_file: PathBuf,
    /// Where to write the public key.
    #[arg(long, env = "NIXCACHE_PUBLIC_KEY_FILE")]
    pub public_key_file: PathBuf,
}

impl ServeArgs {
    /// The database URL, defaulting to SQLite inside the data dir.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.0.clone(),
            None => format!("sqlite://{}/db.sqlite", self.data_dir.display()),
        }
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
                }))
            }
        }
    }
}

/// A database URL, which may hold a password: `Debug` shows it redacted.
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
        f.write_str(&crate::db::redact_url(&self.0))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn storage(flags: &[&str]) -> anyhow::Result<Option<S3Config>> {
        let cli = Cli::try_parse_from(["nixcache", "serve"].iter().chain(flags))?;
        let Command::Serve(args) = cli.command else {
            unreachable!()
        };
        args.storage.s3_config()
    }

    #[test]
    fn storage_flags_are_checked() {
        assert!(storage(&[]).unwrap().is_none());
        let err = storage(&["--storage", "s3"]).unwrap_err().to_string();
        assert!(err.contains("--s3-bucket"), "{err}");
        let err = storage(&["--s3-bucket", "b"]).unwrap_err().to_string();
        assert!(err.contains("--storage s3"), "{err}");
        let s3 = storage(&[
            "--storage",
            "s3",
            "--s3-bucket",
            "b",
            "--s3-path-style",
            "--s3-prefix",
            "p",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (s3.bucket.as_str(), s3.path_style, s3.prefix.as_str()),
            ("b", true, "p")
        );
        assert!(s3.endpoint.is_none() && s3.region.is_none() && s3.credentials.is_none());
    }
}
