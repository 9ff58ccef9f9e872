//! The upstream caches: priorities from their nix-cache-info, concurrent narinfo lookups that take
//! the best-priority verified hit, and NAR downloads.

mod error;
mod outbound;

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use nixcache_protocol::{CacheInfo, NarInfo, PublicKey, StorePathHash, STORE_DIR};
use reqwest::{header, StatusCode};
use url::Url;

use crate::metrics::ObjectKind;

pub use error::UpstreamError;
pub use nixcache_formats::netrc::{Credentials, Netrc};

/// Largest narinfo or nix-cache-info accepted (real ones are a few KiB).
const MAX_TEXT_BYTES: usize = 1 << 20;

/// Priority assumed for an upstream whose nix-cache-info could not be read (Nix's default).
const DEFAULT_PRIORITY: u32 = 50;

/// Timeouts and credentials shared by every upstream.
#[derive(Clone, Debug)]
pub struct UpstreamOptions {
    pub connect_timeout: Duration,
    pub header_timeout: Duration,
    pub read_timeout: Duration,
    /// Whether upstreams may be in link-local space (see [`outbound`]).
    pub allow_link_local: bool,
    pub netrc: Netrc,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// One upstream cache.
#[derive(Debug)]
pub struct Upstream {
    base: Url,
    priority: RwLock<Option<u32>>,
    credentials: Option<Credentials>,
}

impl Upstream {
    pub fn url(&self) -> &str {
        self.base.as_str()
    }
    pub fn priority(&self) -> u32 {
        self.priority
            .read()
            .map(|p| p.unwrap_or(DEFAULT_PRIORITY))
            .unwrap_or(DEFAULT_PRIORITY)
    }
    fn priority_known(&self) -> bool {
        self.priority.read().map(|p| p.is_some()).unwrap_or(false)
    }
}

/// What the upstreams said about a narinfo.
#[derive(Debug)]
pub enum Lookup {
    /// A verified narinfo; its `url` is absolute.
    Found(Box<NarInfo>),
    /// Every upstream answered, none has it (or none with a trusted signature).
    NotFound,
    /// No hit, and at least one upstream failed: the client should retry later.
    Failed(UpstreamError),
}

pub struct Upstreams {
    list: Vec<Arc<Upstream>>,
    ctx: Arc<TaskContext>,
}

impl Upstreams {
    pub fn new(
        urls: &[String],
        trusted: Vec<PublicKey>,
        options: UpstreamOptions,
    ) -> Result<Self, UpstreamError> {
        let mut client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .user_agent(concat!("nixcache/", env!("CARGO_PKG_VERSION")))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(outbound::redirect_policy());
        if !options.allow_link_local {
            client = client.dns_resolver(outbound::NoLinkLocal::shared());
        }
        let client = client.build().map_err(|error| UpstreamError::Client { error })?;
        let mut list = Vec::new();
        for raw in urls {
            let invalid = |reason: String| UpstreamError::Invalid {
                url: crate::redact::url(raw),
                reason,
            };
            let mut base = Url::parse(raw.trim()).map_err(|e| invalid(format!("not a URL: {e}")))?;
            if !base.username().is_empty() || base.password().is_some() {
                return Err(invalid(
                    "put credentials in a netrc file (--netrc-file), not in the URL".into(),
                ));
            }
            if !matches!(base.scheme(), "http" | "https") {
                return Err(invalid(
                    "only http:// and https:// upstreams are supported".into(),
                ));
            }
            if !base.path().ends_with('/') {
                base.set_path(&format!("{}/", base.path()));
            }
            if !options.allow_link_local {
                outbound::check_literal(&base).map_err(invalid)?;
            }
            let priority = fixed_priority(&base).map_err(invalid)?;
            base.set_query(None);
            let credentials = base.host_str().and_then(|h| options.netrc.lookup(h)).cloned();
            list.push(Arc::new(Upstream {
                base,
                priority: RwLock::new(priority),
                credentials,
            }));
        }
        Ok(Self {
            list,
            ctx: Arc::new(TaskContext {
                client,
                trusted,
                options,
            }),
        })
    }

    pub fn list(&self) -> &[Arc<Upstream>] {
        &self.list
    }

    /// Reads nix-cache-info of every upstream whose priority is not known yet. Failures are logged
    /// and retried on the next call; they never stop the proxy.
    pub async fn refresh_priorities(&self) {
        let pending = self.list.iter().filter(|u| !u.priority_known());
        futures::future::join_all(pending.map(|u| self.refresh_priority(u))).await;
    }

    async fn refresh_priority(&self, upstream: &Upstream) {
        let url = upstream.base.join("nix-cache-info").map_err(|e| e.to_string());
        let result = match url {
            Ok(url) => self.ctx.get_text(upstream, url).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match result.and_then(|text| text.ok_or_else(|| "no nix-cache-info (404)".into())) {
            Ok(text) => match CacheInfo::parse(&text) {
                Ok(info) if info.store_dir != STORE_DIR => {
                    tracing::warn!(
                        upstream = upstream.url(),
                        store_dir = info.store_dir,
                        "upstream serves another store dir"
                    );
                }
                Ok(info) => {
                    let priority = info.priority.unwrap_or(DEFAULT_PRIORITY);
                    if let Ok(mut p) = upstream.priority.write() {
                        *p = Some(priority);
                    }
                    tracing::info!(upstream = upstream.url(), priority, "upstream ready");
                }
                Err(e) => tracing::warn!(upstream = upstream.url(), error = %e, "invalid nix-cache-info"),
            },
            Err(e) => {
                tracing::warn!(upstream = upstream.url(), error = %e, "upstream not reachable; will retry")
            }
        }
    }

    /// Asks every upstream at once; returns the verified hit of best priority.
    pub async fn lookup_narinfo(&self, hash: &StorePathHash) -> Lookup {
        let mut order: Vec<&Arc<Upstream>> = self.list.iter().collect();
        order.sort_by_key(|u| u.priority());
        let tasks: Vec<_> = order
            .iter()
            .map(|u| {
                let (this, upstream) = (Arc::clone(&self.ctx), Arc::clone(u));
                let hash = *hash;
                let url = upstream.url().to_owned();
                (
                    url,
                    tokio::spawn(async move { this.narinfo_from(&upstream, &hash).await }),
                )
            })
            .collect();
        let mut failure = None;
        let mut tasks = tasks.into_iter();
        while let Some((url, task)) = tasks.next() {
            match task.await {
                Ok(Ok(Some(info))) => {
                    tasks.for_each(|(_, t)| t.abort());
                    return Lookup::Found(Box::new(info));
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => failure = Some(e),
                Err(error) => failure = Some(UpstreamError::Task { url, error }),
            }
        }
        failure.map_or(Lookup::NotFound, Lookup::Failed)
    }

    /// Starts a download of `url` from the upstream that served its narinfo; resolves once the
    /// response headers arrived with status 200.
    pub async fn get_nar(&self, url: &str) -> Result<reqwest::Response, UpstreamError> {
        let parsed = Url::parse(url).map_err(|e| UpstreamError::Invalid {
            url: url.into(),
            reason: e.to_string(),
        })?;
        let upstream = self.owner_of(parsed.as_str());
        let label = upstream.map_or("other", |u| u.url());
        let started = std::time::Instant::now();
        let result = match self.ctx.send(upstream.map(Arc::as_ref), parsed.clone()).await {
            Ok(response) if response.status() == StatusCode::OK => Ok(response),
            Ok(response) => Err(UpstreamError::Status {
                url: parsed.to_string(),
                status: response.status().as_u16(),
            }),
            Err(err) => Err(err),
        };
        let metrics = &self.ctx.options.metrics;
        match &result {
            Ok(_) => metrics.upstream_request(label, ObjectKind::Nar, started.elapsed()),
            Err(err) => metrics.upstream_error(label, ObjectKind::Nar, err.reason()),
        }
        result
    }

    /// The configured upstream `url` lies under (its credentials and metric label), if any.
    fn owner_of(&self, url: &str) -> Option<&Arc<Upstream>> {
        self.list.iter().find(|u| url.starts_with(u.base.as_str()))
    }

    /// Counts a NAR download from `url` that broke off inside its body.
    pub fn nar_body_failed(&self, url: &str, err: &UpstreamError) {
        let label = self.owner_of(url).map_or("other", |u| u.url());
        self.ctx
            .options
            .metrics
            .upstream_error(label, ObjectKind::Nar, err.reason());
    }
}

/// `?priority=N` on an upstream URL (as on a Nix substituter URL) fixes its priority, instead of
/// the one its nix-cache-info gives; no other parameter is understood.
fn fixed_priority(url: &Url) -> Result<Option<u32>, String> {
    let mut priority = None;
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "priority" => {
                let n = value
                    .parse()
                    .map_err(|_| format!("priority={value} is not a number"))?;
                priority = Some(n);
            }
            other => {
                return Err(format!(
                    "unknown parameter {other:?} (only ?priority=N is understood)"
                ))
            }
        }
    }
    Ok(priority)
}

/// The body as text, or `None` when it is longer than `limit`.
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Option<String>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(String::from_utf8_lossy(&body).into_owned()))
}

/// What a spawned lookup needs, detached from `Upstreams`' lifetime.
struct TaskContext {
    client: reqwest::Client,
    trusted: Vec<PublicKey>,
    options: UpstreamOptions,
}

impl TaskContext {
    async fn send(&self, upstream: Option<&Upstream>, url: Url) -> Result<reqwest::Response, UpstreamError> {
        let mut request = self
            .client
            .get(url.clone())
            .header(header::ACCEPT_ENCODING, "identity");
        if let Some(creds) = upstream.and_then(|u| u.credentials.as_ref()) {
            request = request.basic_auth(&creds.login, Some(&creds.password));
        }
        let after = self.options.header_timeout;
        match tokio::time::timeout(after, request.send()).await {
            Err(_) => Err(UpstreamError::Timeout {
                url: url.to_string(),
                after,
            }),
            Ok(Err(error)) if error.is_redirect() => Err(UpstreamError::Redirect {
                url: url.to_string(),
                reason: std::error::Error::source(&error).map_or_else(String::new, ToString::to_string),
                error,
            }),
            Ok(Err(error)) => Err(UpstreamError::Request {
                url: url.to_string(),
                error,
            }),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// GET a small text document; `None` on 404/403/410 (absent, as Nix treats them).
    async fn get_text(&self, upstream: &Upstream, url: Url) -> Result<Option<String>, UpstreamError> {
        let response = self.send(Some(upstream), url.clone()).await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN | StatusCode::GONE => return Ok(None),
            status => {
                return Err(UpstreamError::Status {
                    url: url.to_string(),
                    status: status.as_u16(),
                })
            }
        }
        let after = self.options.read_timeout;
        match tokio::time::timeout(after, read_limited(response, MAX_TEXT_BYTES)).await {
            Err(_) => Err(UpstreamError::Timeout {
                url: url.to_string(),
                after,
            }),
            Ok(Err(error)) => Err(UpstreamError::Request {
                url: url.to_string(),
                error,
            }),
            Ok(Ok(None)) => Err(UpstreamError::Invalid {
                url: url.to_string(),
                reason: format!("larger than {MAX_TEXT_BYTES} bytes"),
            }),
            Ok(Ok(Some(text))) => Ok(Some(text)),
        }
    }

    /// One upstream's verified narinfo; `Ok(None)` for absent or untrusted. Timed and counted.
    #[tracing::instrument(level = "info", name = "upstream_narinfo", skip_all, fields(upstream = upstream.url(), %hash))]
    async fn narinfo_from(
        &self,
        upstream: &Upstream,
        hash: &StorePathHash,
    ) -> Result<Option<NarInfo>, UpstreamError> {
        let started = std::time::Instant::now();
        let result = self.verified_narinfo(upstream, hash).await;
        let metrics = &self.options.metrics;
        match &result {
            Ok(_) => metrics.upstream_request(upstream.url(), ObjectKind::Narinfo, started.elapsed()),
            Err(err) => metrics.upstream_error(upstream.url(), ObjectKind::Narinfo, err.reason()),
        }
        result
    }

    async fn verified_narinfo(
        &self,
        upstream: &Upstream,
        hash: &StorePathHash,
    ) -> Result<Option<NarInfo>, UpstreamError> {
        let url = upstream
            .base
            .join(&format!("{hash}.narinfo"))
            .map_err(|e| UpstreamError::Invalid {
                url: upstream.url().into(),
                reason: e.to_string(),
            })?;
        let Some(text) = self.get_text(upstream, url.clone()).await? else {
            return Ok(None);
        };
        let invalid = |reason: String| UpstreamError::Invalid {
            url: url.to_string(),
            reason,
        };
        let mut info = NarInfo::parse(&text).map_err(|e| invalid(format!("malformed narinfo: {e}")))?;
        if info.store_path.hash() != hash {
            return Err(invalid(format!("narinfo is for {}, not {hash}", info.store_path)));
        }
        if !info.verify_any(&self.trusted) {
            let sigs: Vec<String> = info.sigs.iter().map(|s| s.key_name().to_owned()).collect();
            tracing::warn!(%url, ?sigs, "narinfo not signed by any trusted key; treated as a miss");
            return Ok(None);
        }
        // Sizes are not covered by the signature: refuse what no real NAR can be.
        // A compressed file is never much larger than its NAR (xz, zstd, bzip2 add < 1 % to
        // incompressible data); an inflated FileSize would reserve room no download needs.
        let too_big = |n: u64| i64::try_from(n).is_err();
        let largest_file = info.nar_size.saturating_add(info.nar_size / 100 + (1 << 20));
        if info.file_size == Some(0)
            || info.file_size.is_some_and(|n| too_big(n) || n > largest_file)
            || too_big(info.nar_size)
        {
            return Err(invalid(format!(
                "impossible FileSize {:?} / NarSize {}",
                info.file_size, info.nar_size
            )));
        }
        if !info.compression.is_supported() {
            tracing::warn!(%url, compression = info.compression.as_str(), "unsupported compression; treated as a miss");
            return Ok(None);
        }
        let nar_url = url
            .join(&info.url)
            .map_err(|e| invalid(format!("bad URL {:?}: {e}", info.url)))?;
        // The URL is not covered by the signature: never let it point away from this upstream.
        if nar_url.origin() != upstream.base.origin() {
            return Err(invalid(format!("NAR URL {nar_url} is not on this upstream")));
        }
        info.url = nar_url.to_string();
        Ok(Some(info))
    }
}
