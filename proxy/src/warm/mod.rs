//! `nixcache warm`: fetches whole closures through a running nixcache, so they are cached before
//! clients ask (a CronJob after a nixpkgs bump). It is a client of the cache's own protocol:
//! the narinfos of the closures and their NARs (bodies counted and dropped; the cache verifies
//! and stores them), a few requests at once, each tried again when the cache is busy. So it
//! works against any replica and any backend, and replicas share the downloads as they share a
//! client's. [`jobs`] runs the same walk for `POST /_nixcache/warm`.

pub mod jobs;

use std::{collections::HashSet, fmt, time::Duration};

use base64::Engine as _;
use futures::StreamExt;
use nixcache_protocol::{NarInfo, StorePath, StorePathHash};
use tokio::task::JoinSet;

/// What to warm, and how.
#[derive(Clone, Debug)]
pub struct WarmOptions {
    /// The cache's base URL, e.g. `http://nixcache:8501`.
    pub url: String,
    /// Store paths (`/nix/store/<hash>-<name>`) whose closures are fetched.
    pub paths: Vec<StorePath>,
    /// Requests at once.
    pub concurrency: usize,
    /// Narinfos only: the NARs are left for clients (or the cache's prefetch).
    pub narinfos_only: bool,
    /// Bound on each request, its body included.
    pub timeout: Duration,
    /// Never through an outbound proxy (`HTTP_PROXY`): set when the cache is this process.
    pub direct: bool,
    /// Sent with every request, for a private cache.
    pub authorization: Option<Authorization>,
}

/// An `Authorization` header value: a secret, so `Debug` never shows it and the header is marked
/// sensitive (kept out of logs, and not sent on when a redirect leads to another host).
#[derive(Clone)]
pub struct Authorization(String);

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authorization(***)")
    }
}

impl Authorization {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// From what a credentials file for `nixcache warm` holds: its first line that is neither
    /// empty nor a comment, `USER:PASSWORD` (sent as HTTP Basic) or a token (sent as Bearer).
    pub fn from_file_text(text: &str) -> Option<Self> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))?;
        Some(Self(match line.split_once(':') {
            Some(_) => format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(line)),
            None => format!("Bearer {line}"),
        }))
    }

    fn header(&self) -> anyhow::Result<reqwest::header::HeaderMap> {
        let mut value = reqwest::header::HeaderValue::from_str(&self.0)
            .map_err(|_| anyhow::anyhow!("the credential holds characters a header cannot"))?;
        value.set_sensitive(true);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, value);
        Ok(headers)
    }
}

/// Requests at once, unless told otherwise.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// The bound on each request, unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What a warm run did.
#[derive(Debug, Default)]
pub struct WarmReport {
    /// Paths of the closures found.
    pub paths: usize,
    /// NARs fetched, and of those already stored in the cache.
    pub nars: usize,
    pub nars_stored_before: usize,
    /// NAR file bytes received.
    pub nar_bytes: u64,
    /// Paths no upstream of the cache has (`404`).
    pub missing: Vec<String>,
    /// Requests that failed, and why.
    pub failed: Vec<String>,
}

impl WarmReport {
    /// Whether everything asked for is in the cache now.
    pub fn complete(&self) -> bool {
        self.missing.is_empty() && self.failed.is_empty()
    }
}

impl fmt::Display for WarmReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} paths; {} NARs fetched ({} stored before), {}",
            self.paths,
            self.nars,
            self.nars_stored_before,
            crate::units::format_size(self.nar_bytes)
        )?;
        for path in &self.missing {
            write!(f, "\nmissing: {path} (no upstream of the cache has it)")?;
        }
        for failure in &self.failed {
            write!(f, "\nfailed: {failure}")?;
        }
        Ok(())
    }
}

/// One request's outcome.
enum Fetched {
    Narinfo(Box<NarInfo>),
    Nar { bytes: u64, stored_before: bool },
    Missing(String),
    Failed(String),
}

/// Walks the closures of `options.paths` through the cache; an `Err` only when the cache
/// cannot be asked at all.
pub async fn run(options: &WarmOptions) -> anyhow::Result<WarmReport> {
    // A stored NAR may be answered with a redirect to the bucket (`--s3-redirect`): that says
    // it is stored, and following it would only download it from there.
    let policy = reqwest::redirect::Policy::none();
    let mut client = reqwest::Client::builder()
        .timeout(options.timeout)
        .redirect(policy);
    if options.direct {
        client = client.no_proxy();
    }
    if let Some(authorization) = &options.authorization {
        client = client.default_headers(authorization.header()?);
    }
    let client = client.build()?;
    let base = options.url.trim_end_matches('/').to_owned();
    let mut report = WarmReport::default();
    let mut seen: HashSet<StorePathHash> = HashSet::new();
    let mut queue: Vec<String> = Vec::new();
    for path in &options.paths {
        if seen.insert(*path.hash()) {
            queue.push(format!("{base}/{}.narinfo", path.hash()));
        }
    }
    let mut running = JoinSet::new();
    while !queue.is_empty() || !running.is_empty() {
        while running.len() < options.concurrency.max(1) {
            let Some(url) = queue.pop() else { break };
            running.spawn(fetch(client.clone(), url));
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        match done.unwrap_or_else(|e| Fetched::Failed(format!("a request task failed: {e}"))) {
            Fetched::Narinfo(info) => {
                report.paths += 1;
                for reference in &info.references {
                    if seen.insert(*reference.hash()) {
                        queue.push(format!("{base}/{}.narinfo", reference.hash()));
                    }
                }
                if !options.narinfos_only {
                    queue.push(format!("{base}/{}", info.url));
                }
            }
            Fetched::Nar { bytes, stored_before } => {
                report.nars += 1;
                report.nars_stored_before += usize::from(stored_before);
                report.nar_bytes += bytes;
            }
            Fetched::Missing(url) => report.missing.push(url),
            Fetched::Failed(why) => report.failed.push(why),
        }
    }
    Ok(report)
}

/// Tries per request: a busy cache (`503` with `Retry-After`), a `502`/`504` or a dropped
/// connection is tried again, so a load spike does not fail a scheduled warm-up.
const ATTEMPTS: u32 = 4;
/// Pause before the next try, times the tries so far, unless `Retry-After` says otherwise.
const BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause a `Retry-After` may ask for.
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// One try's outcome: done (well or not), or worth another try after a pause.
enum Try {
    Done(Fetched),
    Again { why: String, pause: Option<Duration> },
}

/// GETs `url`: a narinfo (parsed) or a NAR (counted), trying again when it may help.
async fn fetch(client: reqwest::Client, url: String) -> Fetched {
    let mut tries = 1;
    loop {
        match fetch_once(&client, &url).await {
            Try::Done(fetched) => return fetched,
            Try::Again { why, .. } if tries >= ATTEMPTS => return Fetched::Failed(why),
            Try::Again { pause, .. } => {
                tokio::time::sleep(pause.unwrap_or(BACKOFF * tries).min(MAX_PAUSE)).await;
                tries += 1;
            }
        }
    }
}

async fn fetch_once(client: &reqwest::Client, url: &str) -> Try {
    let again = |why: String| Try::Again { why, pause: None };
    let response = match client.get(url).send().await {
        Ok(response) => response,
        Err(err) => return again(format!("{url}: {err}")),
    };
    match response.status() {
        reqwest::StatusCode::OK => {}
        reqwest::StatusCode::TEMPORARY_REDIRECT if !url.ends_with(".narinfo") => {
            let stored_before = true;
            return Try::Done(Fetched::Nar {
                bytes: 0,
                stored_before,
            });
        }
        reqwest::StatusCode::NOT_FOUND => return Try::Done(Fetched::Missing(url.to_owned())),
        status @ (reqwest::StatusCode::BAD_GATEWAY
        | reqwest::StatusCode::SERVICE_UNAVAILABLE
        | reqwest::StatusCode::GATEWAY_TIMEOUT) => {
            let pause = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.trim().parse().ok())
                .map(Duration::from_secs);
            return Try::Again {
                why: format!("{url}: {status}"),
                pause,
            };
        }
        status => return Try::Done(Fetched::Failed(format!("{url}: {status}"))),
    }
    if url.ends_with(".narinfo") {
        return match response.text().await {
            Ok(text) => Try::Done(match NarInfo::parse(&text) {
                Ok(info) => Fetched::Narinfo(Box::new(info)),
                Err(err) => Fetched::Failed(format!("{url}: {err}")),
            }),
            Err(err) => again(format!("{url}: {err}")),
        };
    }
    let stored_before = response
        .headers()
        .get("x-cache-status")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"hit"));
    let mut body = response.bytes_stream();
    let mut bytes = 0;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => bytes += chunk.len() as u64,
            Err(err) => return again(format!("{url}: {err}")),
        }
    }
    Try::Done(Fetched::Nar { bytes, stored_before })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_credential_file_line_is_basic_or_bearer() {
        let basic = Authorization::from_file_text("# for the warm-up\n\n laptop:s3cret:x \n").unwrap();
        // base64("laptop:s3cret:x"): the password may hold a colon.
        assert_eq!(basic.0, "Basic bGFwdG9wOnMzY3JldDp4");
        let bearer = Authorization::from_file_text("tok-0123456789abcdef\nignored\n").unwrap();
        assert_eq!(bearer.0, "Bearer tok-0123456789abcdef");
        assert!(Authorization::from_file_text("# only a comment\n\n").is_none());
        let header = bearer.header().unwrap();
        assert!(header[reqwest::header::AUTHORIZATION].is_sensitive());
        assert!(Authorization::new("bad\nvalue").header().is_err());
    }
}
