//! Replicas: the cold-miss bursts of [`super::misses`] (30 clients at once
//! for one uncached NAR, behind a rate-limited and behind a 50 ms upstream)
//! against [`REPLICAS`] `nixcache serve` processes sharing one data dir (one
//! SQLite database, one NAR directory), the clients spread round-robin over
//! them. Beside them, in the same run and in alternating order: nginx's
//! `proxy_cache` with `proxy_cache_lock on` (one instance: what one cache
//! achieves) and one nixcache. The goal is one upstream GET whichever replica
//! a client asks. Per server: upstream GETs, TTFB min/median/max, last byte,
//! the peak RSS summed over its processes (nginx: master and workers;
//! replicas: all of them) and of its largest process, and their CPU time.

use anyhow::{Context, Result};

use super::fresh::{self, record_gets, record_latency, Fresh, REPLICAS};
use super::hits::{measure_memory, progress, Memory};
use super::procfs::{self, CpuWindow};
use super::report::{Better, Goal, Report};
use super::setup::Objects;
use super::{summary, Server, Settings, Target};
use crate::{TestUpstream, UpstreamCache};

/// Clients of each burst (the coalescing case: 30 clients, 10 per replica).
pub const CLIENTS: usize = 30;

/// nginx first on odd runs (1st, 3rd, …), the replicas first on even ones.
pub fn order(run: usize) -> [Server; 3] {
    if run % 2 == 0 {
        [Server::Nginx, Server::Nixcache, Server::Replicas]
    } else {
        [Server::Replicas, Server::Nixcache, Server::Nginx]
    }
}

/// Both bursts: rate-limited upstream (memory), then 50 ms upstream (latency).
pub async fn run(report: &mut Report, s: &Settings, cache: &UpstreamCache, objects: &Objects) -> Result<()> {
    let upstream = fresh::rate_limited_upstream(cache)?;
    let label = scenario(objects, "MISS", &fresh::rate_limited_label());
    bursts(report, s, cache, objects, &upstream, &label).await?;
    drop(upstream);
    let upstream = fresh::delayed_upstream(cache)?;
    let label = scenario(objects, "cold MISS", &fresh::delayed_label());
    bursts(report, s, cache, objects, &upstream, &label).await
}

/// The scenario's label: `miss` is "MISS" or "cold MISS", `upstream` what the upstream does.
fn scenario(objects: &Objects, miss: &str, upstream: &str) -> String {
    format!(
        "{CLIENTS} clients at once ({}: round-robin over {REPLICAS}), {} NAR {miss}, {upstream}",
        Server::Replicas.name(),
        objects.big_size(),
    )
}

/// Every run, each server fresh: the burst, then its rows.
async fn bursts(
    report: &mut Report,
    s: &Settings,
    cache: &UpstreamCache,
    objects: &Objects,
    upstream: &TestUpstream,
    scenario: &str,
) -> Result<()> {
    for run in 0..s.runs {
        for server in order(run) {
            let busy = procfs::wait_idle().await;
            let fresh = Fresh::start(s, server, cache, upstream).await?;
            let t = fresh.prime(objects, upstream).await?;
            let window = CpuWindow::start(&t.pids());
            let m = measure_memory(&t, &objects.big_nar, objects, CLIENTS)
                .await
                .with_context(|| format!("{scenario}, {}", server.name()))?;
            let cpu = window.finish();
            let gets = upstream.stats().get(&objects.big_nar) as f64;
            let largest = largest_peak_mib(&t);
            record_gets(report, scenario, server, gets);
            let latency = record_latency(report, scenario, server, &m.fetches).unwrap_or_default();
            m.record_rss(report, scenario, server, None);
            let mut rows = report.scoped(scenario, server);
            rows.add(
                "peak RSS of the largest process (VmHWM) MiB",
                Better::Lower,
                Goal::None,
                largest,
            );
            rows.add("server CPU s", Better::Lower, Goal::None, cpu.server_s);
            let what = format!(
                "{latency}, {gets} upstream GETs, peak RSS {:.1} MiB (largest process {largest:.1}), \
                 server CPU {:.2} s",
                m.hwm, cpu.server_s
            );
            progress(scenario, run, s, server, busy, &what);
            if let Fresh::Replicas(cluster) = &fresh {
                let holders = cluster.logging("fetching NAR");
                let detail = format!(
                    "{scenario}, {}, run {}: upstream fetched by replica(s) {holders:?}; {}",
                    server.name(),
                    run + 1,
                    by_replica(&t, &m)
                );
                eprintln!("[bench]   {detail}");
                report.note(detail);
            }
            report.condition(scenario, server, busy, Some(&cpu));
        }
    }
    Ok(())
}

/// The largest `VmHWM` among the server's processes, in MiB.
fn largest_peak_mib(t: &Target) -> f64 {
    let kib = t
        .pids()
        .iter()
        .filter_map(|&p| procfs::status_kib(p, "VmHWM"))
        .max();
    kib.unwrap_or(0) as f64 / 1024.0
}

/// Per replica: its clients' median TTFB and last byte, and its peak RSS
/// (client i asked replica i % n, as [`super::loadgen::burst`] spreads them).
fn by_replica(t: &Target, m: &Memory) -> String {
    let (addrs, pids) = (t.addrs(), t.pids());
    let n = addrs.len();
    (0..n)
        .map(|r| {
            let mine: Vec<_> = m.fetches.iter().skip(r).step_by(n).collect();
            let ttfb: Vec<f64> = mine.iter().map(|f| f.ttfb_s).collect();
            let ttfb = summary(&ttfb).map_or(f64::NAN, |(med, _, _)| med);
            let last = mine.iter().map(|f| f.ttlb_s).fold(0.0, f64::max);
            let peak = pids
                .get(r)
                .and_then(|&p| procfs::status_kib(p, "VmHWM"))
                .unwrap_or(0);
            format!(
                "replica {r}: {} clients, TTFB median {ttfb:.3} s, last byte {last:.3} s, peak RSS {:.1} MiB",
                mine.len(),
                peak as f64 / 1024.0
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}
