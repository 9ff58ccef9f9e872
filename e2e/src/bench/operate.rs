//! What operating the cache costs: the hot-path price of access tracking (narinfo hits with
//! tracking on and off, side by side) and the time `nixcache gc` takes for 10,000 entries.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Parser;
use futures::StreamExt;
use nixcache::cli::{Cli, Command as NixcacheCommand};
use nixcache::db::{MetadataStore, NarInfoRecord, NarRecord};
use nixcache::storage::{BlobKey, BlobStore};
use nixcache_protocol::{Compression, NarFile, NarInfo, Sha256Hash, StorePath, StorePathHash};

use super::hits::NARINFO_CONNS;
use super::report::Report;
use super::setup::{self, Objects};
use super::{fresh, summary, wrk, Settings};
use crate::proxy::nixcache_bin;
use crate::util::run_bounded;
use crate::{TestUpstream, UpstreamCache};

/// Entries `nixcache gc` is timed on.
pub const GC_ENTRIES: usize = 10_000;
/// Size of each synthetic NAR object.
const GC_OBJECT_BYTES: usize = 1024;
/// Entries 0..GC_CHAIN form a chain (each references the one before): the closure a pin of the
/// last one holds, a walk of that many levels, in the GC run that keeps it.
const GC_CHAIN: usize = 1000;

/// narinfo req/s of two nixcache processes on the run's backend, one with access tracking
/// (the default 10 s flush) and one without (`--access-flush-interval 0s`), alternated.
pub async fn access(
    report: &mut Report,
    s: &Settings,
    cache: &UpstreamCache,
    objects: &Objects,
) -> Result<()> {
    let upstream = TestUpstream::start(&cache.dir)?;
    let on = fresh::cluster(s, 1, cache, &upstream).await?;
    let mut off = fresh::cluster(s, 0, cache, &upstream).await?;
    off.add_replica_with(
        &upstream.url,
        &cache.public_key,
        &["--access-flush-interval", "0s"],
    )
    .await?;
    let script_dir = tempfile::Builder::new()
        .prefix("nixcache-bench-access-")
        .tempdir()?;
    let script = script_dir.path().join("narinfo.lua");
    std::fs::write(&script, wrk::script(&objects.narinfos))?;
    let servers = [
        ("tracking on", &on.replicas[0]),
        ("tracking off", &off.replicas[0]),
    ];
    for (_, proxy) in servers {
        setup::warm(cache, &proxy.url, &upstream.url).await?;
        wrk::run(proxy.addr, &script, 16, Duration::from_secs(2)).await?;
    }
    let mut table = String::from(
        "| narinfo hits | tracking on (flush every 10 s) | tracking off | on/off |\n|---|---|---|---|\n",
    );
    let targets = servers.map(|(_, proxy)| super::Target::nixcache(proxy));
    for conns in NARINFO_CONNS {
        let label = format!("access c={conns}");
        let (mut rps, mut cpu): ([Vec<f64>; 2], [Vec<f64>; 2]) = Default::default();
        for run in 0..s.runs {
            for i in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
                let t = &targets[i];
                let m =
                    super::hits::measure(report, &label, t, || wrk::run(t.addr, &script, conns, s.duration))
                        .await?;
                eprintln!(
                    "[bench] {label} run {}: {} {:.0} req/s",
                    run + 1,
                    servers[i].0,
                    m.value.rps()
                );
                rps[i].push(m.value.rps());
                cpu[i].push(m.cpu.server_s * 1e6 / m.value.requests.max(1) as f64);
            }
        }
        for (what, values, digits) in [("req/s", &rps, 0), ("server CPU µs/req", &cpu, 1)] {
            let [(a, a_min, a_max), (b, b_min, b_max)] =
                values.each_ref().map(|v| summary(v).unwrap_or((0.0, 0.0, 0.0)));
            let _ = writeln!(
                table,
                "| c={conns} {what} | {a:.digits$} ({a_min:.digits$}–{a_max:.digits$}) | \
                 {b:.digits$} ({b_min:.digits$}–{b_max:.digits$}) | {:.3}× |",
                a / b.max(f64::MIN_POSITIVE)
            );
        }
    }
    report.section("Access tracking: the hot-path cost", table);
    Ok(())
}

/// `nixcache gc` on 10,000 synthetic entries (narinfo + 1 KiB NAR each) in the run's backend:
/// a dry run (the scan), then a real run evicting every entry; then, written again, a run that
/// keeps a pinned closure of [`GC_CHAIN`] of them (a chain: one walk level per path).
pub async fn gc(report: &mut Report, s: &Settings, cache: &UpstreamCache) -> Result<()> {
    let upstream = TestUpstream::start(&cache.dir)?;
    let cluster = fresh::cluster(s, 0, cache, &upstream).await?;
    let started = Instant::now();
    let (args, env) = filled(&cluster).await?;
    eprintln!(
        "[bench] gc: {GC_ENTRIES} entries written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let bin = tokio::task::spawn_blocking(nixcache_bin).await??;
    let mut table = format!(
        "| `nixcache gc` on {GC_ENTRIES} entries ({:?}) | wall time (process) | GC's own time |\n|---|---|---|\n",
        s.backend
    );
    let pinned = format!("evict all but a pinned closure of {GC_CHAIN} (a chain)");
    for (what, flags) in [
        ("dry run (scan only)", vec!["--dry-run"]),
        ("evict all", vec![]),
        (pinned.as_str(), vec![]),
    ] {
        let evicting = if what == pinned {
            let (db, storage) = open(&args).await?;
            fill(&db, &storage).await?;
            let (last, _) = entry(GC_CHAIN - 1)?;
            db.put_pin(&nixcache::db::PinRecord {
                path: last.info.store_path,
                closure: true,
                declared: false,
                created_at: nixcache::db::Timestamp::now(),
            })
            .await?;
            GC_ENTRIES - GC_CHAIN
        } else {
            GC_ENTRIES
        };
        let (wall, out) = run_gc(&bin, &args, &env, &flags)?;
        // "…, freed 9.8 MiB in 2.91 s; size now …": the number before " s; size now".
        let own = out
            .split(" s; size now")
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .unwrap_or("?");
        eprintln!("[bench] gc {what}: {wall:.2} s\n{out}");
        ensure!(
            out.contains(&format!("evicted {evicting} narinfos")),
            "unexpected report: {out}"
        );
        let _ = writeln!(table, "| {what} | {wall:.2} s | {own} s |");
    }
    report.section("Garbage collection", table);
    Ok(())
}

/// The cluster's backend flags and environment, once [`GC_ENTRIES`] entries are written into
/// its database and storage (from this process, which then has the S3 credentials too).
pub(super) async fn filled(
    cluster: &crate::cluster::Cluster,
) -> Result<(Vec<String>, Vec<(String, String)>)> {
    let (args, env) = cluster.backend();
    if let Some(dir) = args.iter().skip_while(|a| *a != "--data-dir").nth(1) {
        std::fs::create_dir_all(dir)?;
    }
    for (name, value) in &env {
        std::env::set_var(name, value);
    }
    let (db, storage) = open(&args).await?;
    fill(&db, &storage).await?;
    Ok((args, env))
}

async fn open(args: &[String]) -> Result<(Arc<dyn MetadataStore>, Arc<dyn BlobStore>)> {
    let argv = ["nixcache", "gc", "--max-size", "0"]
        .into_iter()
        .map(String::from)
        .chain(args.iter().cloned());
    let NixcacheCommand::Gc(gc) = Cli::try_parse_from(argv)?.command else {
        anyhow::bail!("not a gc command");
    };
    nixcache::app::open_backend(&gc.backend).await
}

fn entry(i: usize) -> Result<(NarInfoRecord, Vec<u8>)> {
    // Distinct contents: each narinfo has a NAR of its own.
    let mut bytes: Vec<u8> = (0..GC_OBJECT_BYTES).map(|b| (b ^ i) as u8).collect();
    bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
    let hash = chain_hash(i).0;
    let nar_file = NarFile {
        hash: Sha256Hash::digest(&bytes),
        compression: Compression::None,
    };
    let info = NarInfo {
        store_path: StorePath::new(StorePathHash(hash), &format!("gc-bench-{i}"))?,
        url: format!("http://127.0.0.1:1/{}", nar_file.url()),
        compression: Compression::None,
        file_hash: Some(nar_file.hash),
        file_size: Some(bytes.len() as u64),
        nar_hash: nar_file.hash,
        nar_size: bytes.len() as u64,
        references: match i {
            1..GC_CHAIN => vec![StorePath::new(chain_hash(i - 1), &format!("gc-bench-{}", i - 1))?],
            _ => Vec::new(),
        },
        deriver: None,
        sigs: Vec::new(),
        ca: None,
    };
    let record = NarInfoRecord {
        info,
        nar_file,
        proxy_sig: None,
    };
    Ok((record, bytes))
}

/// Entry `i`'s store path hash.
fn chain_hash(i: usize) -> StorePathHash {
    let digest = Sha256Hash::digest(format!("bench gc entry {i}").as_bytes());
    let mut hash = [0u8; 20];
    hash.copy_from_slice(&digest.0[..20]);
    StorePathHash(hash)
}

/// Writes [`GC_ENTRIES`] narinfos, their NAR rows and objects, 16 at a time.
async fn fill(db: &Arc<dyn MetadataStore>, storage: &Arc<dyn BlobStore>) -> Result<()> {
    let results: Vec<Result<()>> = futures::stream::iter(0..GC_ENTRIES)
        .map(|i| async move {
            let (record, bytes) = entry(i)?;
            let key = BlobKey::for_nar(&record.nar_file);
            let body = futures::stream::once(async move { Ok(bytes::Bytes::from(bytes)) });
            let size = storage.put_stream(&key, Box::pin(body)).await?;
            db.put_narinfo(&record).await?;
            let nar = NarRecord {
                nar_file: record.nar_file.clone(),
                file_size: size,
                nar_hash: record.info.nar_hash,
            };
            db.put_nar(&nar).await?;
            Ok(())
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect()
}

fn run_gc(bin: &Path, args: &[String], env: &[(String, String)], flags: &[&str]) -> Result<(f64, String)> {
    let mut cmd = Command::new(bin);
    cmd.args(["gc", "--max-size", "0", "--gc-keep-recent", "0s"])
        .args(flags)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)));
    let started = Instant::now();
    let out = run_bounded(&mut cmd, Duration::from_secs(600)).context("nixcache gc")?;
    let wall = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "nixcache gc failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((wall, text))
}
