//! Binaries built the way their images build them: `cargo build -p PACKAGE --bin BIN` of that
//! package alone, so its features are its own. A workspace build unifies features across
//! packages and can hide a missing one (it hid the operator's missing rustls crypto provider,
//! which made the image panic at start). They get a target directory of their own
//! (`<target>/standalone`), so the workspace build never overwrites them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};

use crate::util::{run_bounded, target_dir};

const BUILD_TIMEOUT: Duration = Duration::from_secs(40 * 60);
/// The cargo profile of these builds (the workspace `Cargo.toml` says why it is its own).
const PROFILE: &str = "standalone";

/// The `nixcache-operator` binary, built alone.
pub fn operator_bin() -> Result<PathBuf> {
    standalone("nixcache-operator", "nixcache-operator")
}

/// The `nixcache` binary, built alone.
pub fn nixcache_bin() -> Result<PathBuf> {
    standalone("nixcache", "nixcache")
}

/// `<target>/standalone/standalone/BIN`, built once per test process (cargo makes a rebuild of an
/// unchanged package a no-op).
pub fn standalone(package: &str, bin: &str) -> Result<PathBuf> {
    static BUILT: Mutex<BTreeMap<String, Result<PathBuf, String>>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    built
        .entry(format!("{package}/{bin}"))
        .or_insert_with(|| build(package, bin).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

/// The target directory of the standalone builds.
pub fn standalone_target() -> PathBuf {
    target_dir().join("standalone")
}

fn build(package: &str, bin: &str) -> Result<PathBuf> {
    let target = standalone_target();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("no workspace dir")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace).env("CARGO_TARGET_DIR", &target).args([
        "build",
        "--locked",
        "--profile",
        PROFILE,
        "-p",
        package,
        "--bin",
        bin,
    ]);
    let t0 = Instant::now();
    let out = run_bounded(&mut cmd, BUILD_TIMEOUT)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        stderr
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let path = target.join(PROFILE).join(bin);
    ensure!(path.is_file(), "{} does not exist after {cmd:?}", path.display());
    eprintln!(
        "[nixcache-e2e] built {} alone in {} ms",
        path.display(),
        t0.elapsed().as_millis()
    );
    Ok(path)
}
