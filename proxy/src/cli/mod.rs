//! Command line: `nixcache serve | migrate | gc | fsck | keygen | warm`. Every flag also reads a `NIXCACHE_*` env var.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

mod access;
mod backend;
mod connections;
mod fills;
mod fsck;
mod gc;
mod pin;
mod prefetch;
mod tier;
mod warm;
pub use access::AccessArgs;
pub use backend::{BackendArgs, DatabaseUrl, StorageArgs, StorageKind};
pub use connections::ConnectionArgs;
pub use fills::FillArgs;
pub use fsck::FsckArgs;
pub use gc::{GcArgs, ServeGcArgs};
pub use pin::{PinAction, PinArgs};
pub use prefetch::{PrefetchArg, PrefetchArgs};
pub use tier::HitArgs;
pub use warm::WarmArgs;

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
    /// Evict least-recently-used entries until the cache fits --max-size, report, and exit
    /// (what a Kubernetes CronJob runs; `serve --gc-schedule` does the same in-process).
    Gc(Box<GcArgs>),
    /// Check that storage and the database agree (objects missing, the wrong size or unrecorded,
    /// uploads past their deadline; --verify re-hashes contents), --repair what is wrong, report
    /// and exit: 0 when nothing was wrong, 2 when all was repaired, 3 when problems remain.
    Fsck(Box<FsckArgs>),
    /// Pin store paths so GC never evicts them (add, rm, ls).
    Pin(PinArgs),
    /// Write a new signing key pair in Nix's format (like `nix-store --generate-binary-cache-key`).
    Keygen(KeygenArgs),
    /// Fetch whole closures through a running cache, so they are cached before clients ask
    /// (e.g. a CronJob after a nixpkgs bump); exits non-zero when a path is missing or failed.
    Warm(WarmArgs),
}

/// `--content-encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ContentEncodingMode {
    /// Encode what compresses well (zstd, br or gzip) for clients whose Accept-Encoding lists one.
    Auto,
    /// Never: every answer goes as stored.
    Off,
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

    #[command(flatten)]
    pub backend: BackendArgs,

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

    /// netrc file with credentials for upstreams; repeatable (comma-separated in the env var),
    /// the files are read as one [default: ~/.netrc when it exists].
    #[arg(long = "netrc-file", env = "NIXCACHE_NETRC_FILE", value_delimiter = ',')]
    pub netrc_files: Vec<PathBuf>,

    /// Time allowed to connect to an upstream.
    #[arg(long, env = "NIXCACHE_UPSTREAM_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub upstream_connect_timeout: Duration,

    /// Time allowed for an upstream to answer with response headers.
    #[arg(long, env = "NIXCACHE_UPSTREAM_HEADER_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub upstream_header_timeout: Duration,

    /// Longest pause allowed while an upstream sends a body.
    #[arg(long, env = "NIXCACHE_UPSTREAM_READ_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub upstream_read_timeout: Duration,

    /// How often each upstream's nix-cache-info is probed. One that does not answer (or answers
    /// 5xx) is down: lookups skip it, without waiting for its timeout, until a probe gets an
    /// answer. Three failed requests in a row mark it down before its next probe.
    #[arg(long, env = "NIXCACHE_UPSTREAM_PROBE_INTERVAL", default_value = "10s", value_parser = parse_interval)]
    pub upstream_probe_interval: Duration,

    /// Allow upstreams in link-local space (169.254.0.0/16, fe80::/10, also NAT64-embedded) and
    /// at the cloud metadata addresses outside it (fd00:ec2::254, 100.100.100.200); refused by
    /// default, by address and by what a name resolves to.
    #[arg(long, env = "NIXCACHE_UPSTREAM_ALLOW_LINK_LOCAL")]
    pub upstream_allow_link_local: bool,

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

    #[command(flatten)]
    pub gc: ServeGcArgs,

    #[command(flatten)]
    pub access: AccessArgs,

    #[command(flatten)]
    pub fills: FillArgs,

    #[command(flatten)]
    pub prefetch: PrefetchArgs,

    #[command(flatten)]
    pub connections: ConnectionArgs,

    #[command(flatten)]
    pub hits: HitArgs,

    /// Content-Encoding of narinfos, listings, logs, build traces and uncompressed NARs of 4 KiB
    /// to 16 MiB: `auto` encodes them for a client that asks (Nix 2.34 does, Nix 2.8 does not),
    /// `off` never (e.g. where a CDN in front compresses).
    #[arg(long, env = "NIXCACHE_CONTENT_ENCODING", value_enum, default_value_t = ContentEncodingMode::Auto)]
    pub content_encoding: ContentEncodingMode,

    /// How often the last access of hits is written to the database (in batches; no write per
    /// hit). It is also the resolution of LRU order. 0s turns tracking off: GC then evicts the
    /// entries fetched first.
    #[arg(long, env = "NIXCACHE_ACCESS_FLUSH_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub access_flush_interval: Duration,

    /// On SIGTERM/SIGINT: how long open responses and upstream downloads may run on (after
    /// --shutdown-delay) before the process exits.
    #[arg(long, env = "NIXCACHE_SHUTDOWN_GRACE", default_value = "25s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// On SIGTERM/SIGINT: how long to go on accepting connections while /readyz already answers
    /// 503, so a load balancer stops sending clients first (5s in Kubernetes); then the listener
    /// closes.
    #[arg(long, env = "NIXCACHE_SHUTDOWN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,

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

/// A duration for something done on a schedule: at least 100 ms, so a typo cannot make it spin.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if interval < Duration::from_millis(100) {
        return Err(format!("{text} is too short: at least 100ms"));
    }
    Ok(interval)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::storage::S3Config;

    #[test]
    fn an_interval_is_at_least_100ms() {
        assert_eq!(parse_interval("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_interval("100ms").unwrap(), Duration::from_millis(100));
        assert!(parse_interval("0s").unwrap_err().contains("too short"));
        assert!(parse_interval("ten").is_err());
    }

    fn storage(flags: &[&str]) -> anyhow::Result<Option<S3Config>> {
        let cli = Cli::try_parse_from(["nixcache", "serve"].iter().chain(flags))?;
        let Command::Serve(args) = cli.command else {
            unreachable!()
        };
        args.backend.storage.s3_config()
    }

    #[test]
    fn database_urls_are_redacted_in_debug_output() {
        let url = "postgres://nixcache:hunter2@db:5432/nixcache";
        let shown = format!("{:?}", DatabaseUrl(url.into()));
        assert_eq!(shown, "postgres://nixcache:***@db:5432/nixcache");
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

    #[test]
    fn warm_defaults_are_those_of_http_warm_ups() {
        let cli = Cli::try_parse_from([
            "nixcache",
            "warm",
            "/nix/store/7h7qgvs4kgzsn8a6rb274saxyqh4jxlz-a",
        ]);
        let Command::Warm(args) = cli.unwrap().command else {
            unreachable!()
        };
        let options = args.options().unwrap();
        assert_eq!(options.concurrency, crate::warm::DEFAULT_CONCURRENCY);
        assert_eq!(options.timeout, crate::warm::DEFAULT_TIMEOUT);
        assert!(options.authorization.is_none());
    }

    #[test]
    fn warm_auth_files_hold_a_password_or_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let warm_with = |text: &str| {
            let file = dir.path().join("credential");
            std::fs::write(&file, text).unwrap();
            let argv = [
                "nixcache",
                "warm",
                "--auth-file",
                file.to_str().unwrap(),
                "/nix/store/7h7qgvs4kgzsn8a6rb274saxyqh4jxlz-a",
            ];
            let Command::Warm(args) = Cli::try_parse_from(argv).unwrap().command else {
                unreachable!()
            };
            args.options()
        };
        let basic = warm_with("# warm-up\nlaptop:s3cret\n").unwrap();
        // Shown nowhere, not even in Debug.
        assert_eq!(format!("{:?}", basic.authorization), "Some(Authorization(***))");
        let token = warm_with("\n  tok-0123456789abcdef  \n").unwrap();
        assert!(token.authorization.is_some());
        let err = warm_with("# nothing\n").unwrap_err();
        assert!(format!("{err:#}").contains("holds no credential"), "{err:#}");
    }
}
