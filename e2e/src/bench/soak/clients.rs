//! The soak's clients, each a task looping until stopped: hits on the "hot" half of the
//! fixture, misses on the "cold" half (which GC keeps evicting), downloads of the big NAR hung
//! up on after a few bytes, and uploads ([`super::uploads`]). Every body is checked against the
//! object's bytes as it arrives.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::outcome::{Counters, Kind, Outcome};
use crate::narinfo::NarInfo;
use crate::UpstreamCache;

/// Clients asking for hot paths.
pub const HIT_CLIENTS: u64 = 4;
/// Pause of a hit client between two paths.
const HIT_PAUSE: Duration = Duration::from_millis(25);
/// Pause of the miss client between two paths: a cold path comes round again after 10 of
/// these, by when GC has evicted it (see `super::SERVE_FLAGS`).
const MISS_PAUSE: Duration = Duration::from_millis(2500);
/// Pause of the cancelling client between two downloads.
const CANCEL_PAUSE: Duration = Duration::from_secs(3);
/// Body bytes the cancelling client reads before it hangs up.
const CANCEL_AFTER: usize = 64 << 10;
/// Longest a request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A path as a client asks for it, and what the answers must say.
#[derive(Clone, Debug)]
pub struct Object {
    /// `/<hash>.narinfo`.
    pub narinfo: String,
    /// `/nar/<file>`.
    pub nar: String,
    /// `Key: value` lines the served narinfo must have (the proxy adds its own `Sig`).
    pub fields: Vec<(String, String)>,
    /// The NAR file's bytes.
    pub bytes: Bytes,
}

/// The fixture, split: even paths are hot, odd ones cold, the big one is for hanging up on.
pub struct Mix {
    pub hot: Vec<Object>,
    pub cold: Vec<Object>,
    pub big: Object,
}

impl Mix {
    pub fn of(cache: &UpstreamCache) -> Result<Mix> {
        let (mut hot, mut cold) = (Vec::new(), Vec::new());
        for (i, path) in cache.paths.iter().enumerate() {
            if *path == cache.big_path {
                continue;
            }
            let object = object(cache, path)?;
            if i % 2 == 0 {
                hot.push(object);
            } else {
                cold.push(object);
            }
        }
        anyhow::ensure!(!hot.is_empty() && !cold.is_empty(), "the fixture is too small");
        Ok(Mix {
            hot,
            cold,
            big: object(cache, &cache.big_path)?,
        })
    }
}

fn object(cache: &UpstreamCache, path: &str) -> Result<Object> {
    let text = std::fs::read_to_string(cache.narinfo_path(path))?;
    let fields = NarInfo::parse(&text)?
        .fields
        .into_iter()
        .filter(|(k, _)| k != "Sig")
        .collect();
    Ok(Object {
        narinfo: cache.narinfo_http_path(path),
        nar: cache.nar_http_path(path)?,
        fields,
        bytes: Bytes::from(std::fs::read(cache.nar_file_for(path)?)?),
    })
}

/// What every client shares.
pub struct Ctx {
    pub client: reqwest::Client,
    /// `http://127.0.0.1:PORT` of the nixcache under test.
    pub base: String,
    pub mix: Mix,
    pub counters: Arc<Counters>,
    pub stop: CancellationToken,
}

impl Ctx {
    pub fn new(base: &str, mix: Mix, counters: Arc<Counters>, stop: CancellationToken) -> Result<Ctx> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Ctx {
            client,
            base: base.to_string(),
            mix,
            counters,
            stop,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sleeps for `d`, or less when stopped.
    pub async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = tokio::time::sleep(d) => {}
        }
    }

    /// GET the narinfo, then (if it was served) the NAR, counting both under `kind`.
    pub async fn fetch(&self, kind: Kind, object: &Object) {
        let got = self.get_narinfo(object).await;
        self.counters.count(kind, &object.narinfo, &got);
        if got.ok() {
            let got = self.get_nar(&object.nar, &object.bytes).await;
            self.counters.count(kind, &object.nar, &got);
        }
    }

    async fn get_narinfo(&self, object: &Object) -> Outcome {
        let response = match self.client.get(self.url(&object.narinfo)).send().await {
            Ok(r) => r,
            Err(e) => return failure(&e),
        };
        let status = response.status().as_u16();
        let text = match response.text().await {
            Ok(t) => t,
            Err(e) if e.is_timeout() => return Outcome::Timeout,
            Err(_) => return Outcome::Cut,
        };
        if status != 200 {
            return Outcome::Status(status);
        }
        let served = NarInfo::parse(&text).unwrap_or(NarInfo { fields: Vec::new() });
        let differs = object.fields.iter().any(|(k, v)| served.get(k) != Some(v));
        if differs {
            return Outcome::BadNarinfo(format!("served {text:?}"));
        }
        Outcome::Status(200)
    }

    /// GET `path`; a `200` body must be `expected`, checked as it arrives.
    async fn get_nar(&self, path: &str, expected: &[u8]) -> Outcome {
        let response = match self.client.get(self.url(path)).send().await {
            Ok(r) => r,
            Err(e) => return failure(&e),
        };
        let status = response.status().as_u16();
        if status != 200 {
            let _ = response.bytes().await;
            return Outcome::Status(status);
        }
        let mut body = response.bytes_stream();
        let (mut offset, mut bad_at) = (0usize, None);
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(_) if bad_at.is_some() => return Outcome::CutAfterBadBytes,
                Err(e) if e.is_timeout() => return Outcome::Timeout,
                Err(_) => return Outcome::Cut,
            };
            let end = offset + chunk.len();
            if bad_at.is_none() && expected.get(offset..end) != Some(&chunk[..]) {
                bad_at = Some(offset);
            }
            offset = end;
        }
        match bad_at {
            None if offset == expected.len() => Outcome::Status(200),
            Some(at) => Outcome::WrongBody(format!(
                "{offset} bytes (expected {}), differing in the chunk at offset {at}",
                expected.len()
            )),
            None => Outcome::WrongBody(format!("{offset} bytes, expected {}", expected.len())),
        }
    }

    /// GET `path` and hang up after [`CANCEL_AFTER`] body bytes.
    async fn get_and_hang_up(&self, path: &str) -> Outcome {
        let response = match self.client.get(self.url(path)).send().await {
            Ok(r) => r,
            Err(e) => return failure(&e),
        };
        let status = response.status().as_u16();
        if status != 200 {
            let _ = response.bytes().await;
            return Outcome::Status(status);
        }
        let mut body = response.bytes_stream();
        let mut got = 0;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => got += c.len(),
                Err(_) => return Outcome::Cut,
            }
            if got >= CANCEL_AFTER {
                // Dropping an unfinished response closes its connection.
                return Outcome::HungUp;
            }
        }
        Outcome::Status(200)
    }
}

/// A request that got no response.
pub fn failure(e: &reqwest::Error) -> Outcome {
    if e.is_timeout() {
        Outcome::Timeout
    } else {
        Outcome::Error(format!("{e:#}"))
    }
}

/// Starts every client but the uploader.
pub fn spawn(ctx: &Arc<Ctx>) -> Vec<JoinHandle<()>> {
    let mut tasks: Vec<JoinHandle<()>> = (0..HIT_CLIENTS)
        .map(|seed| tokio::spawn(hits(ctx.clone(), seed)))
        .collect();
    tasks.push(tokio::spawn(misses(ctx.clone())));
    tasks.push(tokio::spawn(cancels(ctx.clone())));
    tasks
}

async fn hits(ctx: Arc<Ctx>, seed: u64) {
    let mut rng = Rng::new(seed);
    while !ctx.stop.is_cancelled() {
        let object = &ctx.mix.hot[rng.below(ctx.mix.hot.len())];
        ctx.fetch(Kind::Hit, object).await;
        ctx.pause(HIT_PAUSE).await;
    }
}

async fn misses(ctx: Arc<Ctx>) {
    for i in 0.. {
        if ctx.stop.is_cancelled() {
            break;
        }
        ctx.fetch(Kind::Miss, &ctx.mix.cold[i % ctx.mix.cold.len()]).await;
        ctx.pause(MISS_PAUSE).await;
    }
}

/// The big NAR is never stored: its upstream is slow (`super::weather`), so each download is
/// abandoned with more left than `--finish-abandoned-below` and cancelled.
async fn cancels(ctx: Arc<Ctx>) {
    let big = &ctx.mix.big;
    while !ctx.stop.is_cancelled() {
        let got = ctx.get_narinfo(big).await;
        ctx.counters.count(Kind::Cancel, &big.narinfo, &got);
        if got.ok() {
            let got = ctx.get_and_hang_up(&big.nar).await;
            ctx.counters.count(Kind::Cancel, &big.nar, &got);
        }
        ctx.pause(CANCEL_PAUSE).await;
    }
}

/// splitmix64: which hot path next, and the uploads' bytes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (> 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}
