//! Before measuring: the tools, the release `nixcache`, machine facts, and
//! warming nixcache so every object is a hit (bodies checked against the files).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::loadgen::{Check, Conn, BURST_BUFFER};
use crate::narinfo::NarInfo;
use crate::util::{run_bounded, target_dir};
use crate::UpstreamCache;

const APT_HINT: &str = "install them with: apt-get install nginx-light wrk (Debian packages)";

/// `nginx` on PATH or in the sbin directories (not always on a user's PATH).
pub fn nginx_path() -> Result<PathBuf> {
    find_tool("nginx", &["/usr/sbin", "/usr/local/sbin", "/sbin"])
        .with_context(|| format!("nginx is not installed; {APT_HINT}"))
}

fn find_tool(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Fails with the apt packages to install when nginx or wrk is missing.
pub fn check_tools() -> Result<()> {
    let missing: Vec<&str> = [
        ("nginx", nginx_path().is_ok()),
        ("wrk", find_tool("wrk", &[]).is_some()),
    ]
    .iter()
    .filter(|(_, found)| !found)
    .map(|(name, _)| *name)
    .collect();
    if !missing.is_empty() {
        bail!(
            "the bench needs {}, not found on this machine; {APT_HINT}",
            missing.join(" and ")
        );
    }
    Ok(())
}

/// `$NIXCACHE_BIN`, else `cargo build --release -p nixcache` into the target dir.
pub fn nixcache_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("NIXCACHE_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        ensure!(bin.is_file(), "NIXCACHE_BIN={} is not a file", bin.display());
        return Ok(bin);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("no workspace dir")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = target_dir();
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace).env("CARGO_TARGET_DIR", &target).args([
        "build",
        "--release",
        "-p",
        "nixcache",
        "--bin",
        "nixcache",
    ]);
    eprintln!("[bench] {cmd:?}");
    let t0 = Instant::now();
    let out = run_bounded(&mut cmd, Duration::from_secs(1800))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    ensure!(
        out.status.success(),
        "building nixcache failed ({}); set NIXCACHE_BIN to use a built binary:\n{}",
        out.status,
        tail.join("\n")
    );
    eprintln!("[bench] built nixcache in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(target.join("release").join("nixcache"))
}

/// Facts about this machine and the tools, for the report.
pub fn machine_info(nixcache: &Path) -> Vec<(String, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let meminfo = read("/proc/meminfo");
    let mem = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let nginx = nginx_path().map_or_else(|e| e.to_string(), |p| first_line(Command::new(p).arg("-v")));
    let modified = std::fs::metadata(nixcache)
        .and_then(|m| m.modified())
        .map(|t| humantime_like(t.elapsed().unwrap_or_default()))
        .unwrap_or_default();
    vec![
        (
            "date".into(),
            first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])),
        ),
        ("nproc".into(), nproc.to_string()),
        ("cpu".into(), cpu),
        (
            "memory".into(),
            mem.split_once(':').map_or("", |(_, v)| v.trim()).to_string(),
        ),
        (
            "kernel".into(),
            read("/proc/sys/kernel/osrelease").trim().to_string(),
        ),
        ("nginx -v".into(), nginx),
        ("wrk -v".into(), first_line(Command::new("wrk").arg("-v"))),
        (
            "nixcache".into(),
            format!("{} (built {modified} ago)", nixcache.display()),
        ),
        ("workspace (at report time)".into(), source_state()),
    ]
}

/// The workspace's commit and whether the proxy has uncommitted changes
/// (the binary may have been built from a work tree in flux).
fn source_state() -> String {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    let git = |args: &[&str]| {
        let mut cmd = Command::new("git");
        cmd.arg("-C").arg(workspace).args(args);
        run_bounded(&mut cmd, Duration::from_secs(10))
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "(not a git work tree)".to_string();
    };
    match git(&["status", "--porcelain", "--", "proxy", "Cargo.toml", "Cargo.lock"]) {
        Some(s) if s.is_empty() => format!("commit {head}, proxy unchanged"),
        Some(s) => format!(
            "commit {head} + uncommitted changes in {} proxy/workspace files",
            s.lines().count()
        ),
        None => format!("commit {head}"),
    }
}

/// The first line a command prints (stdout, then stderr), before any "Copyright".
fn first_line(cmd: &mut Command) -> String {
    match run_bounded(cmd, Duration::from_secs(10)) {
        Err(e) => format!("({e})"),
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let line = text.lines().next().unwrap_or_default();
            line.split("Copyright")
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        }
    }
}

fn humantime_like(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

/// What the scenarios request.
pub struct Objects {
    /// `/<hash>.narinfo` of every path.
    pub narinfos: Vec<String>,
    /// `/<hash>.narinfo` of the big path.
    pub big_narinfo: String,
    /// `/nar/<filehash>.nar.xz` of the big path.
    pub big_nar: String,
    /// Its bytes, as in the cache directory.
    pub big_bytes: Arc<Vec<u8>>,
    /// The big path's size in MiB (its content; the NAR is a little larger).
    pub big_mib: u64,
}

impl Objects {
    pub fn of(cache: &UpstreamCache) -> Result<Objects> {
        Ok(Objects {
            narinfos: cache.paths.iter().map(|p| cache.narinfo_http_path(p)).collect(),
            big_narinfo: cache.narinfo_http_path(&cache.big_path),
            big_nar: cache.nar_http_path(&cache.big_path)?,
            big_bytes: Arc::new(std::fs::read(cache.nar_file_for(&cache.big_path)?)?),
            big_mib: cache.big_mib,
        })
    }

    /// The big NAR's size for scenario labels: `64 MiB`, `1 GiB`.
    pub fn big_size(&self) -> String {
        size_label(self.big_mib)
    }
}

/// `64 MiB`, `1 GiB`.
pub fn size_label(mib: u64) -> String {
    match mib {
        m if m >= 1024 && m % 1024 == 0 => format!("{} GiB", m / 1024),
        m => format!("{m} MiB"),
    }
}

/// GETs every narinfo and NAR once through both servers: nixcache's
/// narinfos must carry the file's fields (signatures aside), every other
/// body must equal its file. Afterwards everything is a hit in nixcache.
pub async fn warm(cache: &UpstreamCache, nixcache: &str, nginx: &str) -> Result<usize> {
    let mut objects = 0;
    for path in &cache.paths {
        let expected = std::fs::read(cache.narinfo_path(path))?;
        let narinfo_path = cache.narinfo_http_path(path);
        let (status, body) = crate::http::get(&format!("{nginx}{narinfo_path}")).await?;
        ensure!(
            status == 200 && body == expected,
            "nginx: GET {narinfo_path}: {status}, body differs"
        );
        let (status, body) = crate::http::get(&format!("{nixcache}{narinfo_path}")).await?;
        ensure!(status == 200, "nixcache: GET {narinfo_path}: {status}");
        let unsigned = |n: NarInfo| {
            n.fields
                .into_iter()
                .filter(|(k, _)| k != "Sig")
                .collect::<Vec<_>>()
        };
        let got = unsigned(NarInfo::parse(std::str::from_utf8(&body)?)?);
        ensure!(
            got == unsigned(NarInfo::parse(std::str::from_utf8(&expected)?)?),
            "nixcache: GET {narinfo_path}: narinfo differs from the file: {body:?}"
        );
        let nar = Arc::new(std::fs::read(cache.nar_file_for(path)?)?);
        let nar_path = cache.nar_http_path(path)?;
        for base in [nixcache, nginx] {
            get_equal(base, &nar_path, nar.clone()).await?;
        }
        objects += 2;
    }
    Ok(objects)
}

async fn get_equal(base: &str, path: &str, expected: Arc<Vec<u8>>) -> Result<()> {
    let addr = base.trim_start_matches("http://").parse()?;
    let mut conn = Conn::connect(addr, BURST_BUFFER).await?;
    let answer = conn
        .get(path, &Check::Equal(expected))
        .await
        .with_context(|| format!("{base}{path}"))?;
    ensure!(answer.status == 200, "GET {base}{path}: status {}", answer.status);
    Ok(())
}
