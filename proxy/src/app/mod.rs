//! Wiring: build the cache from `ServeArgs`; [`serve`] runs it until SIGTERM/SIGINT.

mod hits;
mod pin;
mod serve;

pub use pin::pin;
pub use serve::serve;

use std::{
    path::PathBuf,
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use anyhow::Context;
use nixcache_protocol::{CacheInfo, PublicKey, STORE_DIR};

use crate::{
    cache::{
        replica::{PeerToken, Replica, ReplicaOptions},
        AccessLog, Cache, CacheParts, FillLimits, HotCache, NegativeCache, ScrubOptions,
    },
    cli::{BackendArgs, ContentEncodingMode, FsckArgs, GcArgs, ServeArgs},
    db,
    fsck::{self, FsckReport},
    gc::{self, GcOptions, GcReport},
    http, keys,
    metrics::Metrics,
    schedule, scratch,
    storage::{BlobStore, LocalStore, S3Store},
    upstream::{Netrc, UpstreamOptions, Upstreams},
    warm::{
        self,
        jobs::{WarmJobOptions, WarmJobs},
    },
};

/// Builds the application state: checks the upstream settings, then opens (and migrates) the
/// database and storage and loads or creates the key. Everything fails here, at start, not on
/// the first request. Starts the background work too (access times, size metrics, scheduled GC).
pub async fn build_state(args: &ServeArgs) -> anyhow::Result<http::AppState> {
    let metrics = Arc::new(Metrics::new());
    if let Some(max_size) = args.gc.max_size {
        metrics.upkeep.set_max_size_flag(max_size);
    }
    let upstreams = Arc::new(build_upstreams(args, &metrics)?);
    let encoders = http::Encoders::new(
        args.content_encoding == ContentEncodingMode::Auto,
        metrics.encoders_busy.clone(),
    );
    let schedule = gc_schedule(args)?;
    hits::check_flags(args)?;
    let data_dir = &args.backend.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    let signer = keys::load_or_generate(args.secret_key_file.as_deref(), data_dir, &key_name(args))?;
    let replica = build_replica(args, &signer).await?;
    let (writes, read_auth) = build_access(args, &metrics, &replica.options.peer_token)?;
    let scratch = scratch::create(data_dir, &replica.options.id)?;

    let metadata = open_metadata(args).await?;
    let storage = open_storage(&args.backend, scratch.path()).await?;
    let (storage, backing, hot_tier) = hits::with_hot_tier(args, storage, &metrics).await?;

    tracing::info!(public_key = %signer.public_key(), upstreams = ?args.upstreams, "signing with key");
    let negative = NegativeCache::new(args.negative_ttl);
    let hot = HotCache::new(args.memory_cache_bytes, args.memory_cache_ttl);
    let cache = Cache::new(CacheParts {
        db: metadata,
        storage,
        backing,
        upstreams,
        signer,
        negative,
        hot,
        scratch,
        replica,
        access: AccessLog::new(args.access_flush_interval),
        metrics,
        fill_limits: fill_limits(args),
        prefetch: args.prefetch.options(),
        redirect: args.hits.s3_redirect.then_some(args.hits.s3_redirect_expiry),
    });
    cache.start_background();
    if let Some(tier) = hot_tier {
        hits::start_sweep(&cache, tier);
    }
    if args.gc.scrub_rate > 0 {
        let (rate, interval) = (args.gc.scrub_rate, args.gc.scrub_interval);
        cache.start_scrub(ScrubOptions { rate, interval });
    }
    if let Some((schedule, options)) = schedule {
        start_gc_schedule(&cache, schedule, options);
    }
    if let Some(schedule) = args.gc.fsck_schedule.clone() {
        start_fsck_schedule(&cache, schedule, args.gc.fsck_verify);
    }
    let info = CacheInfo {
        store_dir: STORE_DIR.into(),
        want_mass_query: true,
        priority: Some(args.priority),
    };
    Ok(http::AppState {
        cache,
        cache_info: info.to_string().into(),
        writes,
        read_auth,
        metrics_elsewhere: args.access.metrics_listen.is_some(),
        draining: Arc::new(AtomicBool::new(false)),
        encoders,
        trusted_proxies: Arc::new(http::forwarded::TrustedProxies::new(
            args.connections.trusted_proxies.clone(),
        )),
    })
}

/// The database, with the declared pins brought in line with the flags.
async fn open_metadata(args: &ServeArgs) -> anyhow::Result<Arc<dyn db::MetadataStore>> {
    let metadata = open_database(&args.backend).await?;
    pin::sync_declared_pins(&*metadata, &args.gc).await?;
    Ok(metadata)
}

async fn open_database(backend: &BackendArgs) -> anyhow::Result<Arc<dyn db::MetadataStore>> {
    let url = backend.database_url();
    db::connect(&url)
        .await
        .with_context(|| format!("opening the database {}", crate::redact::url(&url)))
}

/// Who may read and write: the write verbs, HTTP warm-ups and pins are off by default and, on, need an
/// upload credentials file; a read credentials file makes the cache private. Files are read now.
fn build_access(
    args: &ServeArgs,
    metrics: &Metrics,
    peer_token: &PeerToken,
) -> anyhow::Result<(http::Writes, Option<Arc<http::Credentials>>)> {
    let access = &args.access;
    let writes_on = access.allow_put || access.allow_delete || access.allow_warm || access.allow_pins;
    anyhow::ensure!(
        !writes_on || access.upload_credentials_file.is_some(),
        "--allow-put, --allow-delete, --allow-warm and --allow-pins need --upload-credentials-file (who may write)"
    );
    let upload_file = access.upload_credentials_file.as_deref().filter(|_| writes_on);
    let credentials = http::Credentials::load(
        access.read_credentials_file.as_deref(),
        upload_file,
        metrics.auth_hashes_in_flight.clone(),
    )?
    .map(Arc::new);
    let read_auth = credentials.clone().filter(|c| c.private());
    if let Some(credentials) = &read_auth {
        tracing::info!(?credentials, "private cache: reads need a credential");
    }
    if !writes_on {
        return Ok((http::Writes::default(), read_auth));
    }
    tracing::info!(put = access.allow_put, delete = access.allow_delete, warm = access.allow_warm,
        pins = access.allow_pins, credentials = ?credentials, "writes on");
    let warm = access.allow_warm.then(|| {
        WarmJobs::new(WarmJobOptions {
            url: own_url(args.listen),
            concurrency: warm::DEFAULT_CONCURRENCY,
            timeout: warm::DEFAULT_TIMEOUT,
            // Through a private cache's gate as replicas pass each other's.
            authorization: Some(warm::Authorization::new(peer_token.header_value())),
        })
    });
    let writes = http::Writes {
        put: access.allow_put,
        delete: access.allow_delete,
        auth: credentials,
        max_upload_size: access.max_upload_size,
        warm,
        pins: access.allow_pins,
    };
    Ok((writes, read_auth))
}

/// How this process reaches its own listener: a wildcard address is reached on loopback.
fn own_url(listen: std::net::SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, listen.port()))
}

/// `--max-fills`, `--max-fill-bytes` (by default a quarter of `--max-size`: temp files take
/// disk beside the stored NARs) and `--finish-abandoned-below`.
fn fill_limits(args: &ServeArgs) -> FillLimits {
    let fills = &args.fills;
    let limits = FillLimits {
        max_fills: fills.max_fills as usize,
        max_bytes: fills.max_fill_bytes(args.gc.max_size),
        finish_abandoned_below: fills.finish_abandoned_below,
    };
    tracing::info!(?limits, "fill limits");
    limits
}

/// `--max-size` with `--gc-schedule`.
fn start_gc_schedule(cache: &Cache, schedule: schedule::Schedule, options: GcOptions) {
    tracing::info!(max_size = options.max_size, "scheduled GC on");
    let collector = cache.clone();
    cache.background().spawn("gc_schedule", move |stop| {
        schedule::run(schedule, stop, "GC", move || {
            let (cache, options) = (collector.clone(), options.clone());
            async move { gc::log_scheduled(&cache.collect_garbage(&options).await) }
        })
    });
}

/// `--fsck-schedule`: repairs, cut short at shutdown (every step of a run is safe to cut).
fn start_fsck_schedule(cache: &Cache, schedule: schedule::Schedule, verify: bool) {
    tracing::info!(verify, "scheduled fsck on");
    let options = fsck::FsckOptions {
        verify,
        repair: true,
        ..fsck::FsckOptions::default()
    };
    let checker = cache.clone();
    cache.background().spawn("fsck_schedule", move |stop| {
        let cut = stop.clone();
        schedule::run(schedule, stop, "fsck", move || {
            let (cache, options, cut) = (checker.clone(), options.clone(), cut.clone());
            async move {
                tokio::select! {
                    result = cache.fsck(&options) => fsck::log_scheduled(&result),
                    () = cut.stopped() => tracing::info!("scheduled fsck cut short by the shutdown"),
                }
            }
        })
    });
}

/// `--max-size` with `--gc-schedule` (hourly by default).
fn gc_schedule(args: &ServeArgs) -> anyhow::Result<Option<(schedule::Schedule, GcOptions)>> {
    let gc = &args.gc;
    let Some(max_size) = gc.max_size else {
        anyhow::ensure!(
            gc.gc_schedule.is_none(),
            "--gc-schedule needs --max-size (the size to collect down to)"
        );
        return Ok(None);
    };
    let schedule = match &gc.gc_schedule {
        Some(schedule) => schedule.clone(),
        None => "0 * * * *".parse().map_err(anyhow::Error::msg)?,
    };
    let options = GcOptions {
        max_size,
        keep_recent: gc.gc_keep_recent,
        dry_run: false,
        keep_evicted: gc.gc_keep_evicted,
        keep_uploads: gc.gc_keep_uploads,
    };
    Ok(Some((schedule, options)))
}

/// The database and storage `backend` names, as `nixcache gc` opens them (no temp files are
/// cleared: a `serve` may be running on the same data dir).
pub async fn open_backend(
    backend: &BackendArgs,
) -> anyhow::Result<(Arc<dyn db::MetadataStore>, Arc<dyn BlobStore>)> {
    let metadata = open_database(backend).await?;
    let storage = open_storage(backend, &backend.data_dir.join("tmp")).await?;
    Ok((metadata, storage))
}

/// Runs `nixcache gc`: one collection against the database and storage the flags name.
pub async fn collect_garbage(args: &GcArgs) -> anyhow::Result<GcReport> {
    let (metadata, storage) = open_backend(&args.backend).await?;
    let options = GcOptions {
        max_size: args.max_size,
        keep_recent: args.gc_keep_recent,
        dry_run: args.dry_run,
        keep_evicted: args.gc_keep_evicted,
        keep_uploads: args.gc_keep_uploads,
    };
    let holder = format!("gc-{}", ReplicaOptions::new_id());
    Ok(gc::run_once(metadata, &*storage, &options, &holder, &mut |_| {}).await?)
}

/// Runs `nixcache fsck` against the database and storage the flags name.
pub async fn fsck(args: &FsckArgs) -> anyhow::Result<FsckReport> {
    let (metadata, storage) = open_backend(&args.backend).await?;
    let holder = format!("fsck-{}", ReplicaOptions::new_id());
    Ok(fsck::run_once(metadata, &*storage, &args.options(), &holder).await?)
}

/// The NAR store `--storage` names. An S3 bucket is checked now, so bad settings fail at start.
async fn open_storage(args: &BackendArgs, tmp_dir: &std::path::Path) -> anyhow::Result<Arc<dyn BlobStore>> {
    let Some(config) = args.storage.s3_config()? else {
        let nar_dir = args.data_dir.join("nar");
        return Ok(Arc::new(LocalStore::open(nar_dir, tmp_dir.to_path_buf()).await?));
    };
    let store = S3Store::connect(&config).await?;
    store.ping().await?;
    tracing::info!(bucket = %config.bucket, endpoint = ?config.endpoint, prefix = %config.prefix, "storing NARs in S3");
    Ok(Arc::new(store))
}

fn build_upstreams(args: &ServeArgs, metrics: &Arc<Metrics>) -> anyhow::Result<Upstreams> {
    let trusted = args
        .upstream_public_keys
        .iter()
        .map(|k| PublicKey::parse(k.trim()).with_context(|| format!("invalid --upstream-public-key {k:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let options = UpstreamOptions {
        connect_timeout: args.upstream_connect_timeout,
        header_timeout: args.upstream_header_timeout,
        read_timeout: args.upstream_read_timeout,
        allow_link_local: args.upstream_allow_link_local,
        netrc: read_netrc(&args.netrc_files)?,
        probe_interval: args.upstream_probe_interval,
        metrics: Arc::clone(metrics),
    };
    Ok(Upstreams::new(&args.upstreams, trusted, options)?)
}

async fn build_replica(args: &ServeArgs, signer: &nixcache_protocol::SigningKey) -> anyhow::Result<Replica> {
    let address = match &args.advertise_url {
        Some(url) => {
            let parsed = url::Url::parse(url).with_context(|| format!("invalid --advertise-url {url:?}"))?;
            anyhow::ensure!(
                parsed.scheme() == "http" && parsed.host().is_some() && parsed.path() == "/",
                "--advertise-url must look like http://HOST:PORT, got {url:?}"
            );
            url.trim_end_matches('/').to_owned()
        }
        None => default_advertise_url(args.listen).await,
    };
    let options = ReplicaOptions {
        id: ReplicaOptions::new_id(),
        address,
        lease_ttl: args.lease_ttl.max(Duration::from_millis(300)),
        peer_read_timeout: args.upstream_read_timeout,
        peer_token: PeerToken::from_key(signer),
    };
    tracing::info!(replica = %options.id, advertise_url = %options.address, "replica identity");
    if args.listen.ip().is_unspecified() && options.address.starts_with("http://127.") {
        tracing::warn!(advertise_url = %options.address, "advertising a loopback address: replicas on other \
            hosts cannot stream this one's downloads; set --advertise-url (in Kubernetes, the pod IP)");
    }
    Replica::new(options).context("building the HTTP client for other replicas")
}

/// The listen address when it names one; for a wildcard, the first non-loopback address the
/// hostname resolves to (a pod's IP in Kubernetes), else loopback.
async fn default_advertise_url(listen: std::net::SocketAddr) -> String {
    let port = listen.port();
    if !listen.ip().is_unspecified() {
        return format!("http://{listen}");
    }
    let host = hostname::get().ok().and_then(|h| h.into_string().ok());
    if let Some(host) = host {
        if let Ok(addrs) = tokio::net::lookup_host((host.as_str(), port)).await {
            if let Some(addr) = addrs.into_iter().find(|a| !a.ip().is_loopback() && a.is_ipv4()) {
                return format!("http://{addr}");
            }
        }
    }
    format!("http://127.0.0.1:{port}")
}

/// `--hostname`, else the machine's hostname.
fn key_name(args: &ServeArgs) -> String {
    match &args.hostname {
        Some(name) => name.clone(),
        None => hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "nixcache".into()),
    }
}

/// The netrc files given, read as one; without any, `~/.netrc` when it exists.
fn read_netrc(explicit: &[PathBuf]) -> anyhow::Result<Netrc> {
    let mut paths = explicit.to_vec();
    if paths.is_empty() {
        match std::env::var_os("HOME") {
            Some(home) if PathBuf::from(&home).join(".netrc").exists() => {
                paths.push(PathBuf::from(home).join(".netrc"))
            }
            _ => return Ok(Netrc::default()),
        }
    }
    let mut text = String::new();
    for path in paths {
        let one = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the netrc file {}", path.display()))?;
        text.push_str(&one);
        text.push('\n');
    }
    Ok(Netrc::parse(&text))
}
