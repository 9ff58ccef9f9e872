//! Cold closures: a real Nix client (2.8, and the current one when the runner is there)
//! substitutes a closure into an empty store (the fixture's 20-path chain, then the 121-path
//! wide closure a client walks level by level) through a fresh server —
//! nixcache (prefetch on, as by default), nixcache `--prefetch off`, nginx `proxy_cache` — and
//! straight from the upstream, which answers every request 50 ms late; then once more into
//! another empty store through the now warm server. What is timed is Nix's command alone
//! (`nix-store -r`), not the check after it. Also: the upstream bytes each fetched, against
//! what the client needed, the CPU time the server took for the cold run, and a `nix path-info
//! -r` of the wide closure through a fresh nixcache, which must make it download no NAR. Under
//! each table, the floor no proxy can beat: a path's references are known only from its
//! narinfo, so a cold client waits for one upstream round trip per level of the closure.

use std::{collections::HashMap, time::Duration};

use anyhow::{ensure, Context, Result};

use super::fresh::{cluster, delayed_label, delayed_upstream};
use super::nginx::Nginx;
use super::report::{spread, Report};
use super::{order, procfs, summary, Server, Settings};
use crate::cluster::Cluster;
use crate::nix_client::modern_version;
use crate::{fetch, look_up_paths, FetchOptions, Nix, TestUpstream, UpstreamCache};

/// The ways a client gets the closure, in the table's order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Nixcache,
    NixcacheNoPrefetch,
    Nginx,
    Direct,
}

const VIAS: [Via; 4] = [Via::Nixcache, Via::NixcacheNoPrefetch, Via::Nginx, Via::Direct];

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Nixcache => "nixcache",
            Via::NixcacheNoPrefetch => "nixcache --prefetch off",
            Via::Nginx => "nginx proxy_cache",
            Via::Direct => "upstream directly",
        }
    }
}

/// A server started for one measurement, dropped after it.
enum Running {
    Nixcache(Cluster),
    Nginx(Nginx),
    Direct,
}

/// Seconds cold and warm, upstream bytes and the server's CPU seconds cold, over the runs of
/// one client and one way.
#[derive(Default)]
struct Figures {
    cold: Vec<f64>,
    warm: Vec<f64>,
    upstream_bytes: Vec<f64>,
    server_cpu: Vec<f64>,
}

/// What one measurement gave.
struct Measured {
    cold: f64,
    warm: f64,
    upstream_bytes: u64,
    /// The server's CPU seconds during the cold run (none when there is no server).
    server_cpu: Option<f64>,
}

pub async fn run(report: &mut Report, s: &Settings, chain: &UpstreamCache) -> Result<()> {
    let compression = chain.compression.clone();
    let dag = tokio::task::spawn_blocking(move || UpstreamCache::dag(&compression, "bench"))
        .await?
        .context("the wide closure's fixture")?;
    let mut text = String::new();
    for (cache, shape) in [(chain, "chain"), (&dag, "wide closure")] {
        text.push_str(&table(s, cache, shape).await?);
        text.push('\n');
    }
    text.push_str(&looking_downloads_nothing(s, &dag).await?);
    text.push('\n');
    report.section("Cold closures through the proxy (prefetch)", text);
    Ok(())
}

/// One fixture's table: every client, every way, `s.runs` times.
async fn table(s: &Settings, cache: &UpstreamCache, shape: &str) -> Result<String> {
    let upstream = delayed_upstream(cache)?;
    let needed = closure_file_bytes(cache)?;
    let mib = needed as f64 / f64::from(1 << 20);
    let mut table = format!(
        "The {shape}: {} paths, {mib:.1} MiB of NAR files, {}; median (min–max) of {} runs, fresh \
         servers and empty client stores each run.\n\n| client | via | cold s | ratio to nginx | \
         warm s | upstream bytes / needed | server CPU s cold |\n|---|---|---|---|---|---|---|\n",
        cache.paths.len(),
        delayed_label(),
        s.runs
    );
    let mut clients = vec![(Nix::Host, "Nix 2.8".to_string())];
    if Nix::Modern.available() {
        let version = modern_version().unwrap_or("current");
        clients.push((
            Nix::Modern,
            format!("Nix {}", version.trim_start_matches("nix (Nix) ")),
        ));
    }
    for (nix, client) in clients {
        let mut figures: Vec<Figures> = VIAS.iter().map(|_| Figures::default()).collect();
        for run in 0..s.runs {
            for (at, via) in ordered(run) {
                let busy = procfs::wait_idle().await;
                let m = measure(s, cache, &upstream, via, nix)
                    .await
                    .with_context(|| format!("{shape}, {client} via {}", via.name()))?;
                eprintln!(
                    "[bench] closure ({shape}), {client}, run {}/{}, {}: cold {:.2} s, warm {:.2} \
                     s, upstream {} B, server CPU {:.2} s (busy before {busy:.0} %)",
                    run + 1,
                    s.runs,
                    via.name(),
                    m.cold,
                    m.warm,
                    m.upstream_bytes,
                    m.server_cpu.unwrap_or(f64::NAN),
                );
                let f = &mut figures[at];
                f.cold.push(m.cold);
                f.warm.push(m.warm);
                f.upstream_bytes.push(m.upstream_bytes as f64 / needed as f64);
                f.server_cpu.extend(m.server_cpu);
            }
        }
        table.push_str(&rows(&client, &figures));
    }
    table.push_str(&floor(cache)?);
    Ok(table)
}

/// The floor under every cold time: the closure's depth in narinfo round trips.
fn floor(cache: &UpstreamCache) -> Result<String> {
    let levels = narinfo_levels(cache)?;
    let delay = super::fresh::DELAY;
    let trips = levels + 1;
    let seconds = delay.as_secs_f64() * trips as f64;
    Ok(format!(
        "\nFloor: the closure is {levels} narinfos deep, and a path's references are known only \
         from its narinfo, so any proxy waits {trips} upstream round trips ({levels} for the \
         narinfos, one for the last NAR) × {} ms = {seconds:.2} s, plus what the client does \
         itself (about its warm time).\n",
        delay.as_millis()
    ))
}

/// The closure's depth as a client discovers it: the most narinfo lookups that must follow one
/// another, each path's first found by the shortest way from the root (breadth first, as Nix
/// and the prefetch look them up).
fn narinfo_levels(cache: &UpstreamCache) -> Result<usize> {
    let base = |path: &str| path.rsplit('/').next().unwrap_or(path).to_string();
    let mut references: HashMap<String, Vec<String>> = HashMap::new();
    for path in &cache.paths {
        let info = cache.narinfo_for(path)?;
        let refs = info.references().into_iter().map(String::from).collect();
        references.insert(base(path), refs);
    }
    let mut seen = std::collections::HashSet::from([base(&cache.root)]);
    let (mut level, mut levels) = (vec![base(&cache.root)], 0);
    while !level.is_empty() {
        levels += 1;
        let next = level.iter().flat_map(|p| references.get(p).into_iter().flatten());
        level = next.filter(|r| seen.insert((*r).clone())).cloned().collect();
    }
    Ok(levels)
}

/// The four ways, nginx and nixcache alternating first from run to run.
fn ordered(run: usize) -> Vec<(usize, Via)> {
    let mut vias: Vec<(usize, Via)> = VIAS.iter().copied().enumerate().collect();
    if order(run)[0] == Server::Nginx {
        vias.reverse();
    }
    vias
}

/// Cold and warm seconds through `via`, the bytes the upstream sent meanwhile and the server's
/// CPU time cold.
async fn measure(
    s: &Settings,
    cache: &UpstreamCache,
    upstream: &TestUpstream,
    via: Via,
    nix: Nix,
) -> Result<Measured> {
    let running = match via {
        Via::Nixcache | Via::NixcacheNoPrefetch => {
            let mut c = cluster(s, 0, cache, upstream).await?;
            let extra: &[&str] = match via {
                Via::NixcacheNoPrefetch => &["--prefetch", "off"],
                _ => &[],
            };
            c.add_replica_with(&upstream.url, &cache.public_key, extra)
                .await?;
            Running::Nixcache(c)
        }
        Via::Nginx => Running::Nginx(Nginx::start(&cache.dir, upstream.addr).await?),
        Via::Direct => Running::Direct,
    };
    let (url, key) = match &running {
        Running::Nixcache(c) => (c.replicas[0].url.clone(), c.replicas[0].public_key.clone()),
        Running::Nginx(n) => (
            format!("http://{}", n.proxy_target().addr),
            cache.public_key.clone(),
        ),
        Running::Direct => (upstream.url.clone(), cache.public_key.clone()),
    };
    upstream.reset_stats();
    let pids = server_pids(&running);
    let ticks_before = cpu_ticks(&pids);
    let cold = timed_fetch(&url, &key, cache, nix).await?;
    let server_cpu =
        (!pids.is_empty()).then(|| cpu_ticks(&pids).saturating_sub(ticks_before) as f64 / procfs::clk_tck());
    // What prefetches still run would count for the warm run: let them end first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let upstream_bytes = nar_bytes_sent(upstream, cache)?;
    let warm = timed_fetch(&url, &key, cache, nix).await?;
    Ok(Measured {
        cold,
        warm,
        upstream_bytes,
        server_cpu,
    })
}

/// The processes serving the client: nixcache's, or nginx's master and workers.
fn server_pids(running: &Running) -> Vec<u32> {
    match running {
        Running::Nixcache(c) => c.replicas.iter().filter_map(|r| r.pid()).collect(),
        Running::Nginx(n) => {
            let master = n.proxy_target().pid;
            let mut pids = procfs::children_of(master);
            pids.push(master);
            pids
        }
        Running::Direct => Vec::new(),
    }
}

fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| procfs::cpu_ticks(p)).sum()
}

async fn timed_fetch(url: &str, key: &str, cache: &UpstreamCache, nix: Nix) -> Result<f64> {
    let outcome = fetch(url, key, &[&cache.root], &FetchOptions::with(nix)).await?;
    outcome.expect_whole_closure(cache)?;
    match outcome {
        crate::ClientOutcome::Ok { took, .. } => Ok(took.as_secs_f64()),
        other => anyhow::bail!("{other:?}"),
    }
}

/// NAR file bytes the upstream sent: each GET of a closure NAR counted at its FileSize.
fn nar_bytes_sent(upstream: &TestUpstream, cache: &UpstreamCache) -> Result<u64> {
    let stats = upstream.stats();
    let mut total = 0;
    for path in &cache.paths {
        let gets = stats.get(&cache.nar_http_path(path)?);
        total += gets * cache.narinfo_for(path)?.file_size()?;
    }
    Ok(total)
}

/// The closure's NAR files, in bytes: what a client needs from the upstream.
fn closure_file_bytes(cache: &UpstreamCache) -> Result<u64> {
    let mut total = 0;
    for path in &cache.paths {
        total += cache.narinfo_for(path)?.file_size()?;
    }
    Ok(total)
}

fn rows(client: &str, figures: &[Figures]) -> String {
    let median = |v: &[f64]| summary(v).map_or(f64::NAN, |(m, _, _)| m);
    let nginx_cold = median(&figures[2].cold);
    let mut out = String::new();
    for (via, f) in VIAS.iter().zip(figures) {
        let cpu = match f.server_cpu.is_empty() {
            true => "—".to_string(),
            false => format!("{:.2}", median(&f.server_cpu)),
        };
        out.push_str(&format!(
            "| {client} | {} | {} | {:.2}× | {} | {:.2} | {cpu} |\n",
            via.name(),
            spread(&f.cold),
            median(&f.cold) / nginx_cold,
            spread(&f.warm),
            median(&f.upstream_bytes),
        ));
    }
    out
}

/// `nix path-info -r` (narinfos only) through a fresh nixcache: NAR bytes the upstream sent.
async fn looking_downloads_nothing(s: &Settings, cache: &UpstreamCache) -> Result<String> {
    let upstream = &delayed_upstream(cache)?;
    let mut c = cluster(s, 0, cache, upstream).await?;
    let proxy = c.add_replica_with(&upstream.url, &cache.public_key, &[]).await?;
    upstream.reset_stats();
    let looked = look_up_paths(
        &proxy.url,
        &[&cache.root],
        true,
        Nix::Host,
        Duration::from_secs(120),
    )
    .await?;
    ensure!(looked.ok, "nix path-info -r: {}", looked.output);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let nars = upstream
        .stats()
        .paths_except(&[])
        .into_iter()
        .filter(|p| p.starts_with("/nar/"))
        .count();
    ensure!(nars == 0, "nix path-info -r made nixcache download {nars} NARs");
    Ok(format!(
        "`nix path-info -r` (Nix 2.8) of the wide closure ({} paths) through a fresh nixcache: 0 \
         NAR downloads.",
        cache.paths.len()
    ))
}
