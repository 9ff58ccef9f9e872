//! What `nixcache fsck` costs: a 10,000-entry cache checked by size and by content on every
//! backend shape, and `fsck --verify`'s throughput on the fixture's real xz NARs (a cache filled
//! through the proxy) from a local directory and from S3. No peer's fsck runs here to compare.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use super::operate::{filled, GC_ENTRIES};
use super::report::Report;
use super::{setup, Settings};
use crate::cluster::{Backend, Cluster};
use crate::proxy::nixcache_bin;
use crate::util::run_bounded;
use crate::{TestUpstream, UpstreamCache};

const BACKENDS: [Backend; 3] = [Backend::SharedDir, Backend::PostgresS3, Backend::MySqlS3];

pub async fn run(report: &mut Report, _s: &Settings, cache: &UpstreamCache) -> Result<()> {
    let upstream = TestUpstream::start(&cache.dir)?;
    let bin = tokio::task::spawn_blocking(nixcache_bin).await??;
    let mut entries = format!(
        "| `nixcache fsck` on {GC_ENTRIES} entries (1 KiB each) | sizes only | `--verify` | `--verify --jobs 32` |\n|---|---|---|---|\n"
    );
    for backend in BACKENDS {
        let cluster = start(backend, cache, &upstream).await?;
        let (args, env) = filled(&cluster).await?;
        let (sizes, out) = run_fsck(&bin, &args, &env, &[])?;
        ensure!(
            out.contains(&format!("checked {GC_ENTRIES} stored NARs")),
            "{out}"
        );
        let (verify, out) = run_fsck(&bin, &args, &env, &["--verify"])?;
        // Reading a small object is a round trip: more at once hide its latency.
        let (wide, _) = run_fsck(&bin, &args, &env, &["--verify", "--jobs", "32"])?;
        eprintln!(
            "[bench] fsck {backend:?}: {sizes:.2} s, --verify {verify:.2} s, --jobs 32 {wide:.2} s\n{out}"
        );
        let _ = writeln!(
            entries,
            "| {} | {sizes:.2} s | {verify:.2} s | {wide:.2} s |",
            label(backend)
        );
    }
    report.section("fsck: 10,000 entries", entries);

    let mut rate = String::from(
        "| `fsck --verify` on the fixture's xz NARs | bytes | wall time | MiB/s (fsck's own) |\n|---|---|---|---|\n",
    );
    for backend in [Backend::SharedDir, Backend::PostgresS3] {
        let mut cluster = start(backend, cache, &upstream).await?;
        let proxy = cluster.add_replica(&upstream.url, &cache.public_key).await?;
        setup::warm(cache, &proxy.url, &upstream.url).await?;
        let (args, env) = cluster.backend();
        stored(&bin, &args, &env, cache.paths.len()).await?;
        let (wall, out) = run_fsck(&bin, &args, &env, &["--verify"])?;
        eprintln!("[bench] fsck --verify {backend:?}: {wall:.2} s\n{out}");
        // "…; re-hashed 1.0 GiB (123 MiB/s)".
        let rehashed = out
            .split("re-hashed ")
            .nth(1)
            .and_then(|t| t.split(')').next())
            .unwrap_or("?");
        let (bytes, mib_s) = rehashed.split_once(" (").unwrap_or((rehashed, "?"));
        let _ = writeln!(rate, "| {} | {bytes} | {wall:.2} s | {mib_s} |", label(backend));
    }
    report.section("fsck --verify throughput", rate);
    Ok(())
}

/// Waits until every NAR the warm-up fetched is stored (a client has its bytes before the
/// proxy's upload of them to S3 has finished).
async fn stored(bin: &Path, args: &[String], env: &[(String, String)], nars: usize) -> Result<()> {
    let want = format!("checked {nars} stored NARs");
    for _ in 0..120 {
        if run_fsck(bin, args, env, &[])?.1.contains(&want) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("{nars} NARs not stored after 60 s")
}

fn label(backend: Backend) -> &'static str {
    match backend {
        Backend::SharedDir => "SQLite + local directory",
        Backend::PostgresS3 => "PostgreSQL + S3 (s3s-fs)",
        Backend::MySqlS3 => "MariaDB + S3 (s3s-fs)",
    }
}

async fn start(backend: Backend, cache: &UpstreamCache, upstream: &TestUpstream) -> Result<Cluster> {
    Cluster::start(backend, 0, &upstream.url, &cache.public_key)
        .await?
        .with_context(|| format!("fsck on {backend:?} needs its database and s3s-fs"))
}

/// Runs `nixcache fsck`; its wall time and report. A problem found fails the bench.
fn run_fsck(bin: &Path, args: &[String], env: &[(String, String)], flags: &[&str]) -> Result<(f64, String)> {
    let mut cmd = Command::new(bin);
    cmd.arg("fsck")
        .args(flags)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)));
    let started = Instant::now();
    let out = run_bounded(&mut cmd, Duration::from_secs(900)).context("nixcache fsck")?;
    let wall = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success() && text.contains("no problems found"),
        "nixcache fsck: {}: {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((wall, text))
}
