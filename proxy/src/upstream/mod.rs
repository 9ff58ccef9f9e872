//! The upstream caches: priorities from their nix-cache-info, health from probes of it,
//! concurrent narinfo lookups that take the best-priority verified hit (skipping upstreams that
//! are down), and NAR downloads.

mod error;
mod health;
mod ordered;
mod outbound;
mod params;
mod probe;
mod request;
mod side;
mod trace;

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use futures::StreamExt;
use nixcache_protocol::{NarInfo, PublicKey, StorePathHash};
use reqwest::StatusCode;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;
use url::Url;

use crate::metrics::{ObjectKind, UpstreamLookupResult};

use params::{NarHost, UpstreamParams};
use request::TaskContext;

pub use error::UpstreamError;
pub use health::{Health, HealthReport, UpstreamState};
pub use nixcache_formats::netrc::{Credentials, Netrc};
pub use ordered::Asked;
pub use side::{object_kind, SideDownload, SideLookup};
pub use trace::TraceLookup;

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
    /// How often each upstream is probed (also when to ask again after skipping one).
    pub probe_interval: Duration,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// One upstream cache.
#[derive(Debug)]
pub struct Upstream {
    base: Url,
    priority: RwLock<Option<u32>>,
    /// Set by `?priority=N`: nix-cache-info does not change it.
    priority_fixed: bool,
    credentials: Option<Credentials>,
    /// Other hosts its narinfos may name NARs on (`?nar-host=`).
    nar_hosts: Vec<NarHost>,
    health: Health,
}

impl Upstream {
    pub fn url(&self) -> &str {
        self.base.as_str()
    }
    pub fn health(&self) -> &Health {
        &self.health
    }
    pub fn priority(&self) -> u32 {
        self.priority
            .read()
            .map(|p| p.unwrap_or(DEFAULT_PRIORITY))
            .unwrap_or(DEFAULT_PRIORITY)
    }
    /// Sets the priority; `true` when it changed.
    fn set_priority(&self, priority: u32) -> bool {
        match self.priority.write() {
            Ok(mut p) if *p != Some(priority) => {
                *p = Some(priority);
                true
            }
            _ => false,
        }
    }
}

/// What the upstreams said about a narinfo.
#[derive(Debug)]
pub enum Lookup {
    /// A verified narinfo; its `url` is absolute.
    Found(Box<NarInfo>),
    /// Every upstream answered, none has it (or none with a trusted signature).
    NotFound,
    /// No hit, and at least one upstream failed or was skipped as down: the client should
    /// retry later (not a miss to remember: that upstream may have it).
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
            let params = UpstreamParams::parse(&base).map_err(invalid)?;
            let priority = params.priority;
            base.set_query(None);
            let credentials = base.host_str().and_then(|h| options.netrc.lookup(h)).cloned();
            let up = options.metrics.upstream_up_gauge(base.as_str());
            options.metrics.upstream_at_zero(base.as_str());
            list.push(Arc::new(Upstream {
                base,
                priority_fixed: priority.is_some(),
                priority: RwLock::new(priority),
                credentials,
                nar_hosts: params.nar_hosts,
                health: Health::new(up),
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

    /// Asks every upstream that is not down at once; returns the verified hit of best priority.
    pub async fn lookup_narinfo(&self, hash: &StorePathHash) -> Lookup {
        let (mut order, down): (Vec<&Arc<Upstream>>, Vec<_>) =
            self.list.iter().partition(|u| !u.health.is_down());
        order.sort_by_key(|u| u.priority());
        let tasks: Vec<_> = order
            .iter()
            .map(|u| {
                let (this, upstream) = (Arc::clone(&self.ctx), Arc::clone(u));
                let hash = *hash;
                let url = upstream.url().to_owned();
                // Owned by this lookup: those still running go with it (a hit, or a cancel).
                let ask = async move { this.narinfo_from(&upstream, &hash).await };
                let task = tokio::spawn(ask.in_current_span());
                (url, AbortOnDropHandle::new(task))
            })
            .collect();
        let mut failure = None;
        for ((url, task), upstream) in tasks.into_iter().zip(&order) {
            match task.await {
                Ok(Ok(Some(info))) => {
                    upstream.health.hit();
                    self.ctx
                        .options
                        .metrics
                        .upstream_lookup(&url, UpstreamLookupResult::Hit);
                    return Lookup::Found(Box::new(info));
                }
                Ok(Ok(None)) => {
                    upstream.health.miss();
                    self.ctx
                        .options
                        .metrics
                        .upstream_lookup(&url, UpstreamLookupResult::Miss);
                }
                Ok(Err(e)) => failure = Some(e),
                Err(error) => failure = Some(UpstreamError::Task { url, error }),
            }
        }
        match failure {
            Some(e) => Lookup::Failed(e),
            None if !down.is_empty() => Lookup::Failed(UpstreamError::Down {
                upstreams: down.len(),
                retry_after: self.ctx.options.probe_interval,
            }),
            None => Lookup::NotFound,
        }
    }

    /// Starts a download of `url` from the upstream that served its narinfo; resolves once the
    /// response headers arrived with status 200. Failures, in the headers or later in the
    /// body, are counted against that upstream.
    pub async fn get_nar(&self, url: &str) -> Result<NarDownload, UpstreamError> {
        let parsed = Url::parse(url).map_err(|e| UpstreamError::Invalid {
            url: url.into(),
            reason: e.to_string(),
        })?;
        let upstream = self.owner_of(parsed.as_str());
        let label = upstream.map_or("other", |u| u.url()).to_owned();
        let started = std::time::Instant::now();
        let result = match self.ctx.send(upstream.map(Arc::as_ref), parsed.clone()).await {
            Ok(response) if response.status() == StatusCode::OK => Ok(response),
            Ok(response) => Err(UpstreamError::Status {
                url: parsed.to_string(),
                status: response.status().as_u16(),
            }),
            Err(err) => Err(err),
        };
        let metrics = Arc::clone(&self.ctx.options.metrics);
        let owner = upstream.cloned();
        let response = match result {
            Ok(response) => response,
            Err(err) => {
                metrics.upstream_error(&label, ObjectKind::Nar, err.reason());
                if let Some(owner) = &owner {
                    owner.request_failed(&err);
                }
                return Err(err);
            }
        };
        metrics.upstream_request(&label, ObjectKind::Nar, started.elapsed());
        if let Some(owner) = &owner {
            owner.request_answered();
        }
        let url = response.url().to_string();
        let size = response.content_length();
        let fetched = metrics.fetched_counters(&label, ObjectKind::Nar);
        let body = response.bytes_stream().map(move |chunk| {
            if let Ok(bytes) = &chunk {
                fetched.iter().for_each(|c| {
                    c.inc_by(bytes.len() as u64);
                });
            }
            chunk.map_err(|error| {
                let err = UpstreamError::Request {
                    url: url.clone(),
                    error,
                };
                metrics.upstream_error(&label, ObjectKind::Nar, err.reason());
                if let Some(owner) = &owner {
                    owner.request_failed(&err);
                }
                err
            })
        });
        Ok(NarDownload {
            size,
            body: Box::pin(body),
        })
    }

    /// The configured upstream `url` lies under (its credentials and metric label), if any.
    fn owner_of(&self, url: &str) -> Option<&Arc<Upstream>> {
        self.list.iter().find(|u| url.starts_with(u.base.as_str()))
    }
}

/// A NAR download whose headers arrived.
pub struct NarDownload {
    /// The body's length, when the upstream says.
    pub size: Option<u64>,
    /// The body; a failure in it is already counted.
    pub body: futures::stream::BoxStream<'static, Result<bytes::Bytes, UpstreamError>>,
}
