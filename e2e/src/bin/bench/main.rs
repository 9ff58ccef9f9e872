//! `cargo run --release -p nixcache-e2e --bin bench -- [--quick] [--runs N] [--only PARTS] [--big-mib N]`
//! (`--only soak --soak-minutes N`: the bounded soak, never part of a run without `--only`)
//!
//! Runs `nixcache serve` (release build) and nginx on the same fixture cache
//! side by side, measures both alternately (narinfo and NAR hits, memory with
//! 16 clients, 16-client cold misses against nginx's proxy_cache lock, the
//! same misses spread over 3 nixcache replicas), and prints a markdown
//! comparison, also written to `<target>/bench-report.md`.
//! Needs nginx and wrk (Debian: `apt-get install nginx-light wrk`) and Nix
//! (to build the fixture cache once). Listens on 127.0.0.1 only. `--help` lists every flag.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nixcache_e2e::bench::hits::{self, Targets};
use nixcache_e2e::bench::nginx::Nginx;
use nixcache_e2e::bench::report::Report;
use nixcache_e2e::bench::setup::{self, Objects};
use nixcache_e2e::bench::soak;
use nixcache_e2e::bench::{
    closure, first_byte, fresh, fsck, misses, operate, replicas, storage, wrk, Settings, Target,
};
use nixcache_e2e::util::target_dir;
use nixcache_e2e::{TestUpstream, UpstreamCache};

use self::cli::parse_args;

mod cli;

/// The bench's fixture is xz-compressed (as cache.nixos.org and the anchors' testbed), unless its
/// big path is larger than this: `nix copy` compresses the incompressible big NAR with xz at
/// ~8 MiB/s here (2 min 9 s for 1 GiB on a busy box), with zstd in seconds (1 GiB: 4 s).
const XZ_UP_TO_MIB: u64 = 256;

/// `xz`, or `zstd` for a big path over [`XZ_UP_TO_MIB`].
fn compression(big_mib: u64) -> &'static str {
    if big_mib <= XZ_UP_TO_MIB {
        "xz"
    } else {
        "zstd"
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = match parse_args(&args) {
        Ok(settings) => settings,
        Err(e) => {
            // `--help` goes to stdout and succeeds; a usage error goes to stderr and fails.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match main_inner(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main_inner(settings: Settings) -> Result<()> {
    let started = Instant::now();
    nixcache_e2e::proxy::no_log_tail_on_drop();
    if settings.needs_tools() {
        setup::check_tools()?;
    }
    let bin = setup::nixcache_bin()?;
    // Before any thread exists: Proxy::start reads it.
    std::env::set_var("NIXCACHE_BIN", &bin);
    let compression = compression(settings.big_mib);
    eprintln!(
        "[bench] fixture cache {compression}/bench, big path {} MiB (built with Nix on first use)",
        settings.big_mib
    );
    let cache =
        UpstreamCache::get_sized(compression, "bench", settings.big_mib).context("the fixture cache")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        tokio::select! {
            r = measure(&settings, &cache) => r,
            signal = stop_signal() => bail!("{signal}; every server started was stopped"),
        }
    });
    // Anything still blocking (none expected) may not hold the process up.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let report = report?;
    let text = render(&settings, &bin, &cache, &report, started.elapsed());
    println!("{text}");
    let path = target_dir().join("bench-report.md");
    std::fs::write(&path, &text).with_context(|| format!("write {}", path.display()))?;
    eprintln!("[bench] report written to {}", path.display());
    Ok(())
}

/// Waits for SIGINT or SIGTERM; dropping the measurement then stops every server.
async fn stop_signal() -> String {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return "interrupted".to_string();
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted (SIGINT)".to_string(),
        _ = term.recv() => "terminated (SIGTERM)".to_string(),
    }
}

async fn measure(s: &Settings, cache: &UpstreamCache) -> Result<Report> {
    let objects = Objects::of(cache)?;
    let mut report = Report::default();
    if ["narinfo", "nar", "memory"].iter().any(|p| s.wants(p)) {
        hits(&mut report, s, cache, &objects).await?;
    }
    if s.wants("storage") {
        storage::run(&mut report, s, cache, &objects).await?;
    }
    if s.wants("misses") {
        misses::rate_limited(&mut report, s, cache, &objects).await?;
        misses::cold(&mut report, s, cache, &objects).await?;
    }
    if s.wants("first-byte") {
        first_byte::run(&mut report, s, cache).await?;
    }
    if s.wants("replicas") {
        replicas::run(&mut report, s, cache, &objects).await?;
    }
    if s.wants("closure") {
        closure::run(&mut report, s, cache).await?;
    }
    if s.wants("access") {
        operate::access(&mut report, s, cache, &objects).await?;
    }
    if s.wants("gc") {
        operate::gc(&mut report, s, cache).await?;
    }
    if s.wants("fsck") {
        fsck::run(&mut report, s, cache).await?;
    }
    if s.wants("soak") {
        soak::run(&mut report, s, cache).await?;
    }
    Ok(report)
}

/// The hit scenarios: nginx's static server against a warm nixcache.
async fn hits(report: &mut Report, s: &Settings, cache: &UpstreamCache, objects: &Objects) -> Result<()> {
    let upstream = TestUpstream::start(&cache.dir)?;
    let nginx = Nginx::start(&cache.dir, upstream.addr).await?;
    let cluster = fresh::cluster(s, 1, cache, &upstream).await?;
    let proxy = &cluster.replicas[0];
    let n = setup::warm(cache, &proxy.url, &format!("http://{}", nginx.static_addr)).await?;
    eprintln!("[bench] warmed nixcache: {n} objects, bodies equal to the files (nginx's too)");
    anyhow::ensure!(proxy.pid().is_some(), "nixcache is not running");
    let targets = Targets {
        nginx: nginx.static_target(),
        nixcache: Target::nixcache(proxy),
    };
    let script_dir = tempfile::Builder::new().prefix("nixcache-bench-wrk-").tempdir()?;
    let script = script_dir.path().join("narinfo.lua");
    std::fs::write(&script, wrk::script(&objects.narinfos))?;
    hits::warm_up(&targets, &script, objects).await?;
    if s.wants("narinfo") {
        hits::narinfo(report, s, &targets, &script).await?;
    }
    if s.wants("nar") {
        hits::nar(report, s, &targets, objects).await?;
    }
    if s.wants("memory") {
        hits::memory(report, s, &targets, objects).await?;
    }
    Ok(())
}

fn render(
    s: &Settings,
    bin: &std::path::Path,
    cache: &UpstreamCache,
    report: &Report,
    wall: Duration,
) -> String {
    let mut out = String::from("## nixcache vs nginx: bench report\n\n");
    out.push_str(&format!("Command: `{}`  \n", s.command));
    out.push_str(&format!(
        "Wall time: {:.0} s; {} run(s) per figure, load runs of {} s, servers alternated (nginx first on odd runs); \
         figures are median (min–max) over the runs; ratio = median(nixcache) / median(nginx); ↑/↓ = higher/lower is better.  \n",
        wall.as_secs_f64(),
        s.runs,
        s.duration.as_secs()
    ));
    if s.needs_tools() {
        out.push_str(
        "nginx: the anchors' static server (sendfile on) for hits, its proxy_cache (lock on) for misses; \
         narinfo load: wrk -t1 --latency, round-robin over the 20 narinfos; NAR load: the bench's raw \
         keep-alive HTTP/1.1 client (4 MiB read buffer per connection).",
    );
    }
    if s.wants("replicas") {
        out.push_str(&format!(
            " {}: {} `nixcache serve` processes sharing one data dir (SQLite + NAR dir), lease TTL 2 s; \
             in its scenarios the clients go round-robin to the replicas, nginx and nixcache get them all; \
             RSS rows are summed over a server's processes.",
            nixcache_e2e::bench::Server::Replicas.name(),
            fresh::REPLICAS
        ));
    }
    let big_file = cache
        .nar_file_for(&cache.big_path)
        .and_then(|f| Ok(std::fs::metadata(f)?.len()));
    out.push_str(&format!(
        " Big NAR: {} of content ({}: {} bytes).\n\n",
        setup::size_label(cache.big_mib),
        cache.compression,
        big_file.map_or_else(|e| format!("({e})"), |n| n.to_string())
    ));
    out.push_str(&report.tables());
    out.push_str("\n### Machine\n\n| | |\n|---|---|\n");
    for (k, v) in setup::machine_info(bin) {
        out.push_str(&format!("| {k} | {v} |\n"));
    }
    out
}
