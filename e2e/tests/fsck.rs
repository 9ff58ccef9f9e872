//! `nixcache fsck` on a cache a real Nix client filled, on every backend shape (SQLite with a
//! local directory; PostgreSQL and MariaDB with S3). Behind the cache's back: one NAR gets a
//! flipped byte (same size: only `--verify` sees it), one is deleted, one is cut short, and an
//! object no row records is dropped in (the state a process killed between storing an object
//! and recording it leaves; dated two hours back, past `--min-age`). fsck reports exactly those,
//! `--repair` fixes them while the proxy serves, a second run finds nothing, and a fresh client
//! then substitutes the whole closure correctly: the three repaired NARs fetched again.

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{ensure, Context, Result};
use nixcache_e2e::cluster::{Backend, Cluster};
use nixcache_e2e::proxy::nixcache_bin;
use nixcache_e2e::util::run_bounded;
use nixcache_e2e::{fetch, FetchOptions, Nix, TestUpstream, UpstreamCache};

nixcache_e2e::each_nix! {
    fsck_on_sqlite_and_a_directory: fsck_finds_and_repairs(Backend::SharedDir);
    fsck_on_postgres_and_s3: fsck_finds_and_repairs(Backend::PostgresS3);
    fsck_on_mariadb_and_s3: fsck_finds_and_repairs(Backend::MySqlS3);
}

async fn fsck_finds_and_repairs(backend: Backend, nix: Nix) -> Result<()> {
    let cache = UpstreamCache::get("xz", "e2e")?;
    let upstream = TestUpstream::start(&cache.dir)?;
    let Some(mut cluster) = Cluster::start(backend, 0, &upstream.url, &cache.public_key).await? else {
        return Ok(());
    };
    let extra = ["--memory-cache-ttl", "1s"];
    let proxy = cluster
        .add_replica_with(&upstream.url, &cache.public_key, &extra)
        .await?;
    let (url, key) = (proxy.url.clone(), proxy.public_key.clone());
    let opts = FetchOptions::with(nix);
    fetch(&url, &key, &[&cache.root], &opts)
        .await?
        .expect_whole_closure(&cache)?;

    let damaged = damage(cluster.object_dir(), backend == Backend::SharedDir)?;
    let fsck = |args: &[&str]| run_fsck(&cluster, args);
    let (code, report) = fsck(&[])?;
    ensure!(code == 3, "exit {code}: {report}");
    for line in [
        "objects missing from storage: 1 ",
        "objects of the wrong size: 1 ",
        "objects no row records: 1 ",
    ] {
        ensure!(report.contains(line), "no {line:?} in: {report}");
    }
    ensure!(
        !report.contains("does not match"),
        "a same-size flip is seen without --verify: {report}"
    );
    let (code, report) = fsck(&["--verify"])?;
    ensure!(
        code == 3 && report.contains("content does not match their hashes: 1 "),
        "exit {code}: {report}"
    );
    let (code, report) = fsck(&["--verify", "--repair", "--dry-run"])?;
    ensure!(
        code == 3 && report.contains("dry run: 4 problems; nothing changed"),
        "exit {code}: {report}"
    );

    let before = nar_gets(&upstream);
    let (code, report) = fsck(&["--verify", "--repair"])?;
    ensure!(
        code == 2 && report.contains("4 problems, 4 repaired"),
        "exit {code}: {report}"
    );
    ensure!(!damaged.orphan.exists(), "the orphan is still there");
    let (code, report) = fsck(&["--verify"])?;
    ensure!(
        code == 0 && report.contains("no problems found"),
        "exit {code}: {report}"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await; // the proxy's memory of NARs
    fetch(&url, &key, &[&cache.root], &opts)
        .await?
        .expect_whole_closure(&cache)?;
    let fetched_again = nar_gets(&upstream) - before;
    ensure!(
        fetched_again == 3,
        "{fetched_again} NARs fetched again from the upstream, not 3"
    );
    Ok(())
}

/// NAR downloads the upstream answered.
fn nar_gets(upstream: &TestUpstream) -> u64 {
    let stats = upstream.stats();
    stats
        .gets
        .iter()
        .filter(|(p, _)| p.contains("nar/"))
        .map(|(_, n)| n)
        .sum()
}

/// Runs `nixcache fsck` on the cluster's backend; its exit code and stdout.
fn run_fsck(cluster: &Cluster, args: &[&str]) -> Result<(i32, String)> {
    let (backend, env) = cluster.backend();
    let out = run_bounded(
        Command::new(nixcache_bin()?)
            .arg("fsck")
            .args(args)
            .args(&backend)
            .envs(env),
        Duration::from_secs(60),
    )?;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().context("fsck killed by a signal")?;
    ensure!(
        code != 1,
        "fsck failed: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((code, report))
}

struct Damaged {
    orphan: PathBuf,
}

/// Damages three stored NARs (flip, delete, cut) and drops an unrecorded one in.
fn damage(dir: &std::path::Path, sharded: bool) -> Result<Damaged> {
    let mut nars = Vec::new();
    collect_nars(dir, &mut nars)?;
    nars.sort();
    ensure!(
        nars.len() >= 4,
        "only {} NARs stored in {}",
        nars.len(),
        dir.display()
    );
    let mut flipped = std::fs::read(&nars[0])?;
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x55;
    std::fs::write(&nars[0], flipped)?;
    std::fs::remove_file(&nars[1])?;
    let cut = std::fs::read(&nars[2])?;
    std::fs::write(&nars[2], &cut[..cut.len() / 2])?;
    let name = format!(
        "{}.nar.xz",
        nixcache_protocol::Sha256Hash::digest(b"nobody records me").to_nixbase32()
    );
    let orphan = if sharded {
        dir.join(&name[..2]).join(&name)
    } else {
        dir.join(&name)
    };
    std::fs::create_dir_all(orphan.parent().context("no parent")?)?;
    std::fs::copy(&nars[3], &orphan)?;
    let touched = Command::new("touch")
        .arg("-d")
        .arg("2 hours ago")
        .arg(&orphan)
        .status()?;
    ensure!(touched.success(), "touch failed");
    Ok(Damaged { orphan })
}

fn collect_nars(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_nars(&path, out)?;
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains(".nar"))
        {
            out.push(path);
        }
    }
    Ok(())
}
