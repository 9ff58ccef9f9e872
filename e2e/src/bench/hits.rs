//! Hits: narinfo load with wrk, big NAR (64 MiB unless `--big-mib`) load
//! with [`loadgen`], and the memory of 16 clients downloading it at once.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::loadgen;
use super::procfs::{self, CpuUse, CpuWindow, RssSampler};
use super::report::{Better, Goal, Report};
use super::setup::Objects;
use super::{order, summary, wrk, Server, Settings, Target};

/// Concurrencies of the narinfo runs (wrk `-c`).
pub const NARINFO_CONNS: [u32; 3] = [1, 16, 64];
/// Concurrencies of the NAR runs.
pub const NAR_CONNS: [usize; 2] = [1, 8];
/// Clients downloading the big NAR at once in the memory runs.
pub const CLIENTS: usize = 16;
const MIB: f64 = 1024.0 * 1024.0;

/// nginx's static server and the warm nixcache.
pub struct Targets {
    pub nginx: Target,
    pub nixcache: Target,
}

impl Targets {
    pub fn get(&self, server: Server) -> &Target {
        match server {
            Server::Nginx => &self.nginx,
            Server::Nixcache => &self.nixcache,
            Server::Replicas => panic!("the hit scenarios measure one nixcache, not replicas"),
        }
    }
}

/// A short unrecorded load on both servers (connections, page cache, allocators).
pub async fn warm_up(targets: &Targets, script: &Path, objects: &Objects) -> Result<()> {
    let len = objects.big_bytes.len() as u64;
    for server in order(0) {
        let t = targets.get(server);
        wrk::run(t.addr, script, 16, Duration::from_secs(2)).await?;
        loadgen::load(t.addr, &objects.big_nar, len, 2, Duration::from_secs(1)).await?;
    }
    Ok(())
}

/// A run during which other processes used more than this (% of one core)
/// is measured again, at most [`MAX_RETRIES`] times.
pub const OTHER_CPU_LIMIT_PCT: f64 = 30.0;
pub const MAX_RETRIES: usize = 2;

/// A load run and the conditions it ran in.
pub struct Measured<T> {
    pub value: T,
    pub cpu: CpuUse,
    pub busy: f64,
}

/// Waits for an idle box, runs `load` while counting CPU, and runs it again
/// when other processes took a real share of the CPU meanwhile.
pub async fn measure<T, F, Fut>(
    report: &mut Report,
    label: &str,
    t: &Target,
    mut load: F,
) -> Result<Measured<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let pids = t.pids();
    let mut attempt = 0;
    loop {
        let busy = procfs::wait_idle().await;
        let window = CpuWindow::start(&pids);
        let value = load()
            .await
            .with_context(|| format!("{label}, {}", t.server.name()))?;
        let cpu = window.finish();
        let other = cpu.pct(cpu.other_s);
        if other <= OTHER_CPU_LIMIT_PCT || attempt == MAX_RETRIES {
            return Ok(Measured { value, cpu, busy });
        }
        attempt += 1;
        let what = format!("other processes used {other:.0} % of a core during the run: measured again");
        eprintln!("[bench] {label}, {}: {what}", t.server.name());
        report.note(format!("{label}, {}: {what} ({attempt}×)", t.server.name()));
    }
}

/// wrk -t1 -c{1,16,64} round-robin over the narinfos.
pub async fn narinfo(report: &mut Report, s: &Settings, targets: &Targets, script: &Path) -> Result<()> {
    for conns in NARINFO_CONNS {
        let scenario = format!("narinfo hits c={conns}");
        for run in 0..s.runs {
            for server in order(run) {
                let t = targets.get(server);
                let m = measure(report, &scenario, t, || {
                    wrk::run(t.addr, script, conns, s.duration)
                })
                .await?;
                let (r, cpu) = (m.value, m.cpu);
                progress(
                    &scenario,
                    run,
                    s,
                    server,
                    m.busy,
                    &format!("{:.0} req/s", r.rps()),
                );
                let per_req = cpu.server_s * 1e6 / r.requests.max(1) as f64;
                let mut rows = report.scoped(&scenario, server);
                rows.add("req/s", Better::Higher, Goal::RatioAtLeast(0.8), r.rps());
                rows.add("p50 µs", Better::Lower, Goal::None, r.p50_us);
                rows.add("p99 µs", Better::Lower, Goal::None, r.p99_us);
                rows.add("server CPU µs/req", Better::Lower, Goal::None, per_req);
                report.condition(&scenario, server, m.busy, Some(&cpu));
            }
        }
    }
    Ok(())
}

/// The big NAR fetched back to back by 1 and 8 keep-alive connections.
pub async fn nar(report: &mut Report, s: &Settings, targets: &Targets, objects: &Objects) -> Result<()> {
    let len = objects.big_bytes.len() as u64;
    let size = objects.big_size();
    for conns in NAR_CONNS {
        let scenario = format!("{size} NAR hits c={conns}");
        for run in 0..s.runs {
            for server in order(run) {
                let t = targets.get(server);
                let path = &objects.big_nar;
                let m = measure(report, &scenario, t, || {
                    loadgen::load(t.addr, path, len, conns, s.duration)
                })
                .await?;
                let (load, cpu) = (m.value, m.cpu);
                let mibps = load.bytes as f64 / MIB / load.elapsed_s;
                progress(&scenario, run, s, server, m.busy, &format!("{mibps:.0} MiB/s"));
                let nars = (load.bytes as f64 / (objects.big_mib as f64 * MIB)).max(1e-9);
                let ttlb = summary(&load.ttlb_ms).map_or(0.0, |(m, _, _)| m);
                let mut rows = report.scoped(&scenario, server);
                rows.add("MiB/s", Better::Higher, Goal::RatioAtLeast(0.9), mibps);
                rows.add("TTLB p50 ms", Better::Lower, Goal::None, ttlb);
                rows.add(
                    &format!("server CPU ms per {size}"),
                    Better::Lower,
                    Goal::None,
                    cpu.server_s * 1e3 / nars,
                );
                let faults = cpu.server_faults as f64 / nars;
                rows.add(
                    &format!("server minor page faults per {size}"),
                    Better::Lower,
                    Goal::None,
                    faults,
                );
                report.condition(&scenario, server, m.busy, Some(&cpu));
            }
        }
    }
    Ok(())
}

/// 16 new connections download the big NAR at once (all hits): RSS
/// before, peak (`VmHWM`, reset first) and the largest `VmRSS` sampled.
pub async fn memory(report: &mut Report, s: &Settings, targets: &Targets, objects: &Objects) -> Result<()> {
    let scenario = format!("{CLIENTS} clients at once, {} NAR hit", objects.big_size());
    for run in 0..s.runs {
        for server in order(run) {
            let t = targets.get(server);
            let busy = procfs::wait_idle().await;
            let m = measure_memory(t, &objects.big_nar, objects, CLIENTS).await?;
            progress(&scenario, run, s, server, busy, &format!("peak {:.1} MiB", m.hwm));
            m.record(report, &scenario, server, Some(64.0));
            report.condition(&scenario, server, busy, None);
        }
    }
    Ok(())
}

/// Memory of a server while a burst of [`CLIENTS`] downloads `path`.
pub struct Memory {
    pub before: f64,
    pub sampled: f64,
    pub hwm: f64,
    /// Whether `VmHWM` could be reset before the burst.
    pub hwm_reset: bool,
    pub fetches: Vec<loadgen::Fetch>,
}

impl Memory {
    /// Records RSS rows and the last-byte time; `limit` (MiB) is the goal for nixcache's peak.
    pub fn record(&self, report: &mut Report, scenario: &str, server: Server, limit: Option<f64>) {
        self.record_rss(report, scenario, server, limit);
        let last = self.last_byte_s();
        let mut rows = report.scoped(scenario, server);
        rows.add("last byte s", Better::Lower, Goal::None, last);
    }

    /// Seconds from the burst's start to its last byte.
    pub fn last_byte_s(&self) -> f64 {
        self.fetches.iter().map(|f| f.ttlb_s).fold(0.0, f64::max)
    }

    /// Records the RSS rows (summed over the server's processes); `limit`
    /// (MiB) is the goal for nixcache's peak.
    pub fn record_rss(&self, report: &mut Report, scenario: &str, server: Server, limit: Option<f64>) {
        let goal = limit.map_or(Goal::None, Goal::Below);
        let mut rows = report.scoped(scenario, server);
        rows.add("RSS before MiB", Better::Lower, Goal::None, self.before);
        rows.add("peak RSS (VmHWM) MiB", Better::Lower, goal, self.hwm);
        rows.add("max sampled VmRSS MiB", Better::Lower, goal, self.sampled);
        if !self.hwm_reset {
            report.note(format!(
                "{scenario}, {}: VmHWM could not be reset, it is the lifetime peak",
                server.name()
            ));
        }
    }
}

pub async fn measure_memory(t: &Target, path: &str, objects: &Objects, clients: usize) -> Result<Memory> {
    let pids = t.pids();
    let hwm_reset = pids.iter().all(|&p| procfs::reset_peak_rss(p));
    let before = procfs::sum_mib(&pids, "VmRSS");
    let sampler = RssSampler::start(pids.clone());
    let fetches = loadgen::burst(&t.addrs(), path, clients, objects.big_bytes.clone()).await;
    let sampled = sampler.finish().await;
    let fetches = fetches.with_context(|| format!("{clients} clients on {}", t.server.name()))?;
    Ok(Memory {
        before,
        sampled,
        hwm: procfs::sum_mib(&pids, "VmHWM"),
        hwm_reset,
        fetches,
    })
}

/// One progress line on stderr.
pub fn progress(scenario: &str, run: usize, s: &Settings, server: Server, busy: f64, what: &str) {
    eprintln!(
        "[bench] {scenario}, run {}/{}, {:8}: {what} (busy before {busy:.0} %)",
        run + 1,
        s.runs,
        server.name()
    );
}
