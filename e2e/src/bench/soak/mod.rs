//! The bounded soak (`--only soak`; a run without `--only` leaves it out): one `nixcache
//! serve` with uploads on and GC every 10 s, in front of a flaky upstream ([`weather`]), under
//! a mix of hits, misses, downloads hung up on after a few bytes, uploads (some hung up on)
//! and GC, for `--soak-minutes`. Every `--soak-interval` it samples the process's RSS, open
//! fds, threads and temp files ([`samples`]); the verdict says whether they stayed flat once
//! warm. Every answer is counted by status ([`outcome`]); a wrong body is reported loudly.

mod clients;
mod outcome;
mod samples;
mod uploads;
mod weather;

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::report::Report;
use super::{fresh, Settings};
use crate::cluster::Cluster;
use crate::{TestUpstream, UpstreamCache};
use samples::{Probe, Sample};
use weather::Weather;

/// `--soak-minutes` unless given.
pub const DEFAULT_MINUTES: u64 = 10;

/// How long the soak runs and how often it looks.
#[derive(Clone, Debug)]
pub struct SoakSettings {
    pub minutes: u64,
    /// `--soak-interval`; by default a sixtieth of the run, at least 10 s.
    pub interval: Option<Duration>,
}

impl Default for SoakSettings {
    fn default() -> Self {
        SoakSettings {
            minutes: DEFAULT_MINUTES,
            interval: None,
        }
    }
}

impl SoakSettings {
    pub fn length(&self) -> Duration {
        Duration::from_secs(self.minutes * 60)
    }

    pub fn interval(&self) -> Duration {
        self.interval
            .unwrap_or_else(|| (self.length() / 60).max(Duration::from_secs(10)))
    }
}

/// The soak's nixcache flags, beyond the run's backend and `--upload-credentials-file`.
const SERVE_FLAGS: [&str; 13] = [
    "--allow-put",
    // GC every 10 s down to 1 MiB: whatever was not used in the last 10 s goes, so the cold
    // paths are misses again each time they come round (every 25 s), and uploads go too.
    "--max-size",
    "1M",
    "--gc-schedule",
    "*/10 * * * * *",
    "--gc-keep-recent",
    "10s",
    // Hits' access times reach the database within 2 s: the hot paths are never evicted.
    "--access-flush-interval",
    "2s",
    // Evicted narinfos leave memory soon, so the cold paths' narinfos are misses too.
    "--memory-cache-ttl",
    "5s",
    // The default, a quarter of --max-size, would refuse most fills.
    "--max-fill-bytes",
    "256M",
];

/// After the load: how long the proxy is left alone before the last sample.
const SETTLE: Duration = Duration::from_secs(10);
/// How long clients may take to finish their request in flight once stopped.
const FINISH: Duration = Duration::from_secs(150);

pub async fn run(report: &mut Report, s: &Settings, cache: &UpstreamCache) -> Result<()> {
    let mix = clients::Mix::of(cache)?;
    let upstream = TestUpstream::start(&cache.dir)?;
    let weather = Weather::new(&mix.big.nar);
    weather.apply(&upstream, 0);
    let dir = tempfile::Builder::new()
        .prefix("nixcache-bench-soak-")
        .tempdir()?;
    let cluster = start(s, cache, &upstream, dir.path()).await?;
    let proxy = cluster.replicas.first().context("no nixcache")?;
    let pid = proxy.pid().context("nixcache is not running")?;
    let probe = Probe::new(pid, &proxy.data_dir, &proxy.url);
    let counters = Arc::new(outcome::Counters::default());
    let before = probe.sample(Duration::ZERO, "idle, before", &counters).await?;
    eprintln!(
        "[bench] soak: {} min against pid {pid}, a sample every {} s; the upstream: {}",
        s.soak.minutes,
        s.soak.interval().as_secs(),
        weather.describe()
    );
    let stop = CancellationToken::new();
    let ctx = Arc::new(clients::Ctx::new(
        &proxy.url,
        mix,
        counters.clone(),
        stop.clone(),
    )?);
    let mut tasks = clients::spawn(&ctx);
    tasks.push(tokio::spawn(uploads::run(ctx.clone())));
    drop(ctx);
    let started = Instant::now();
    let load = observe(s, &probe, &upstream, &weather, &counters).await;
    stop.cancel();
    finish(tasks).await;
    upstream.clear_faults();
    tokio::time::sleep(SETTLE).await;
    let after = probe.sample(started.elapsed(), "idle, after", &counters).await?;
    let load = load?;
    let upstream_note = format!(
        "{}; {} answers faulted",
        weather.describe(),
        upstream.stats().faults
    );
    let text = render(s, &upstream_note, &before, &load, &after, &counters);
    report.section("Soak: resources over time under a mixed load", text);
    Ok(())
}

/// The nixcache under test: the run's backend, [`SERVE_FLAGS`], a token for uploads.
async fn start(s: &Settings, cache: &UpstreamCache, upstream: &TestUpstream, dir: &Path) -> Result<Cluster> {
    let creds = dir.join("uploaders");
    std::fs::write(&creds, format!("{}\n", uploads::TOKEN))?;
    let creds = creds.display().to_string();
    let mut flags = SERVE_FLAGS.to_vec();
    flags.extend(["--upload-credentials-file", creds.as_str()]);
    let mut cluster = fresh::cluster(s, 0, cache, upstream).await?;
    cluster
        .add_replica_with(&upstream.url, &cache.public_key, &flags)
        .await?;
    Ok(cluster)
}

/// Samples every interval until the soak's length, changing the weather as it goes.
async fn observe(
    s: &Settings,
    probe: &Probe,
    upstream: &TestUpstream,
    weather: &Weather,
    counters: &outcome::Counters,
) -> Result<Vec<Sample>> {
    let started = Instant::now();
    let (end, interval) = (started + s.soak.length(), s.soak.interval());
    let (mut next_sample, mut next_phase, mut phase) = (started + interval, started + weather::PHASE, 0);
    let mut samples = Vec::new();
    while next_sample <= end {
        tokio::time::sleep_until(next_sample.min(next_phase)).await;
        if Instant::now() >= next_phase {
            phase += 1;
            weather.apply(upstream, phase);
            next_phase += weather::PHASE;
        }
        if Instant::now() >= next_sample {
            let sample = probe
                .sample(started.elapsed(), weather.name(phase), counters)
                .await?;
            eprintln!(
                "[bench] soak {:.1}/{} min: RSS {:.1} MiB, {} fds, {} threads, {} temp files ({:.1} MiB), upstream {}",
                sample.at.as_secs_f64() / 60.0,
                s.soak.minutes,
                sample.rss_mib,
                sample.fds,
                sample.threads,
                sample.temp_files,
                sample.temp_bytes as f64 / (1 << 20) as f64,
                sample.note
            );
            samples.push(sample);
            next_sample += interval;
        }
    }
    Ok(samples)
}

/// Waits for the stopped clients to finish their request in flight (at most [`FINISH`]).
async fn finish(tasks: Vec<JoinHandle<()>>) {
    let deadline = Instant::now() + FINISH;
    for task in tasks {
        let abort = task.abort_handle();
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            abort.abort();
        }
    }
}

/// The report's section: the setup, the table over time, every outcome, the verdict.
fn render(
    s: &Settings,
    upstream: &str,
    before: &Sample,
    load: &[Sample],
    after: &Sample,
    counters: &outcome::Counters,
) -> String {
    let mut out = format!(
        "One `nixcache serve` ({:?} backend; `{}`), {} min, a sample every {} s. Clients: {} \
         asking for hot paths (even fixture paths; narinfo then NAR, checked), 1 for cold ones \
         (odd paths, one every 2.5 s: GC has evicted them when they come round), 1 hanging up \
         on the big NAR after 64 KiB (every 3 s), 1 uploading a new path (16–256 KiB NAR, every \
         1 s; every 5th hung up on halfway through its NAR). The upstream: {upstream}. Requests per column are since the row before; `failed` = neither 2xx nor a \
         deliberate hang-up; proxy misses and evictions from its `/metrics`.\n\n",
        s.backend,
        SERVE_FLAGS.join(" "),
        s.soak.minutes,
        s.soak.interval().as_secs(),
        clients::HIT_CLIENTS,
    );
    let mut rows = vec![before.clone()];
    rows.extend(load.iter().cloned());
    rows.push(after.clone());
    out.push_str(&samples::table(&rows));
    out.push('\n');
    out.push_str(&samples::outcomes(&after.counts));
    let (lines, flat) = samples::verdict(load, after);
    let _ = writeln!(
        out,
        "\n**Verdict: {}**\n",
        if flat { "flat" } else { "GROWING (see below)" }
    );
    for line in &lines {
        eprintln!("[bench] soak: {line}");
        let _ = writeln!(out, "- {line}");
    }
    let (unexpected, first) = counters.unexpected_seen();
    if unexpected > 0 {
        let _ = writeln!(out, "\n**{unexpected} UNEXPECTED outcomes**, the first:\n");
        for line in first {
            let _ = writeln!(out, "- {line}");
        }
    } else {
        out.push_str("\nNo unexpected outcome (no wrong body, no bad narinfo, no unexplained status).\n");
    }
    out
}
