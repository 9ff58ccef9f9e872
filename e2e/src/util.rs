//! Small helpers shared by the harness: Nix's base-32, hashing, bounded
//! commands, removing read-only store trees, the cargo target directory.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// The alphabet of Nix's base-32 (no e, o, u, t).
const NIX_BASE32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Nix's base-32 encoding, as in `sha256:<base32>` and store path hashes.
pub fn nix_base32(bytes: &[u8]) -> String {
    let len = (bytes.len() * 8).div_ceil(5);
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        let lo = u32::from(bytes[i]) >> j;
        let hi = bytes.get(i + 1).map_or(0, |&x| u32::from(x) << (8 - j));
        out.push(char::from(NIX_BASE32[((lo | hi) & 0x1f) as usize]));
    }
    out
}

/// True for a string made only of Nix base-32 characters.
pub fn is_nix_base32(s: &str) -> bool {
    s.bytes().all(|c| NIX_BASE32.contains(&c))
}

/// `sha256:<nix base32>` of `data`, the form of `FileHash:` and `NarHash:`.
pub fn nix_sha256(data: &[u8]) -> String {
    format!("sha256:{}", nix_base32(&Sha256::digest(data)))
}

/// Lower-case hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Lower-case hex sha256 of a file, read in chunks.
pub fn sha256_file_hex(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The 32-character hash part of a store path (`/nix/store/<hash>-name`).
pub fn hash_part(store_path: &str) -> &str {
    let base = store_path.rsplit('/').next().unwrap_or(store_path);
    base.split('-').next().unwrap_or(base)
}

/// Settings every Nix command of the tests runs with, whatever `/etc/nix/nix.conf` says:
/// single-user root builds without `nixbld` users or a sandbox, the `nix` command, and no
/// substituter (the machine is offline; each test names its own).
pub const NIX_CONFIG: &str = "experimental-features = nix-command\nbuild-users-group =\nsandbox = false\n\
                              substituters =\nconnect-timeout = 5\n";

/// Runs `cmd` to completion, at most `timeout`, capturing stdout and stderr.
/// A non-zero exit is not an error here; a timeout is (the child is killed).
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    run_bounded_with(cmd, timeout, Stdio::null())
}

/// [`run_bounded`] with `stdin` (e.g. an open file) as the command's standard input.
pub fn run_bounded_with(cmd: &mut Command, timeout: Duration, stdin: Stdio) -> Result<Output> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .env("NIX_CONFIG", NIX_CONFIG)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let readers = [child.stdout.take().map(reader), child.stderr.take().map(reader)];
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let [stdout, stderr] = readers.map(|r| r.and_then(|h| h.join().ok()).unwrap_or_default());
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn reader(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Like [`run_bounded`], but a non-zero exit is an error carrying the output;
/// returns stdout as a string.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<String> {
    run_ok_with(cmd, timeout, Stdio::null())
}

/// [`run_ok`] with `stdin` as the command's standard input.
pub fn run_ok_with(cmd: &mut Command, timeout: Duration, stdin: Stdio) -> Result<String> {
    let what = format!("{cmd:?}");
    let out = run_bounded_with(cmd, timeout, stdin)?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes a tree that may hold read-only directories (a Nix store): makes
/// every directory writable first, never following symlinks.
pub fn remove_tree(path: &Path) -> Result<()> {
    make_writable(path);
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

fn make_writable(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mut perms = meta.permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    let _ = fs::set_permissions(path, perms);
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            make_writable(&entry.path());
        }
    }
}

/// The cargo target directory: `$CARGO_TARGET_DIR`, else derived from the
/// running test binary (`<target>/debug/deps/<test>` gives `<target>`).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    // `<target>/debug` or `<target>/<triple>/debug`: go up to the directory
    // holding `CACHEDIR.TAG`, else one level.
    let profile_parent = dir.parent().map(Path::to_path_buf).unwrap_or_else(|| dir.clone());
    for candidate in profile_parent.ancestors().take(2) {
        if candidate.join("CACHEDIR.TAG").exists() {
            return candidate.to_path_buf();
        }
    }
    profile_parent
}

/// Lines at the end of a text file, for showing what a server logged.
pub fn tail_of_file(path: &Path, lines: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Every file or directory under `dir` whose name contains `needle`
/// (recursively, symlinks not followed); for "was it stored?" checks.
pub fn find_by_name(dir: &Path, needle: &str) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().contains(needle) {
                found.push(entry.path());
            }
            if entry.file_type()?.is_dir() {
                todo.push(entry.path());
            }
        }
    }
    Ok(found)
}

/// Polls `condition` every 20 ms until it holds (true) or `timeout` passes
/// (false).
pub async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The NAR files of a replica's hot tier in `dir` (`--hot-tier-dir`): `nar/<shard>/<file>`,
/// not its temp files.
pub fn hot_tier_files(dir: &Path) -> Vec<PathBuf> {
    let shards = fs::read_dir(dir.join("nar")).into_iter().flatten().flatten();
    shards
        .flat_map(|shard| fs::read_dir(shard.path()).into_iter().flatten().flatten())
        .map(|entry| entry.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_nix() {
        // `nix hash to-base32 sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=` (empty input)
        assert_eq!(
            nix_sha256(b""),
            "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
        assert!(is_nix_base32("0mdqa9w1p6cmli6976v4wi0sw9r4p5pr"));
        assert!(!is_nix_base32("e"));
    }

    #[test]
    fn hash_part_of_store_path() {
        assert_eq!(
            hash_part("/nix/store/0ni3zjzv7bbylb4mbj4i909dfkwc3cky-tb-19-root"),
            "0ni3zjzv7bbylb4mbj4i909dfkwc3cky"
        );
    }
}
