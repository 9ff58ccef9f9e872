//! A real Nix client: substitutes store paths from a binary cache URL into a
//! fresh store root, trusting one key with `require-sigs`, then checks what
//! arrived (NAR hashes and signatures). Either generation ([`Nix`]) of client.

mod generation;
mod logs;
mod traces;
mod verify;

pub use generation::{modern_version, Nix, MODERN_SKIP_MESSAGE};
pub use logs::{copy_log, look_up_paths, read_log, LogRead};
pub use traces::{build_ca, push_ca, CaBuild};

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use tempfile::TempDir;

use crate::fixtures::UpstreamCache;
use crate::util::remove_tree;

/// How the client fetches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    /// `nix-store --store S -r P --option substituters URL` (what a machine
    /// with `substituters = URL` does).
    #[default]
    Substitute,
    /// `nix copy --from URL --to S P`.
    Copy,
}

#[derive(Clone, Debug)]
pub struct FetchOptions {
    pub method: Method,
    /// Which client fetches.
    pub nix: Nix,
    /// Bound on the fetch (verification gets the same again).
    pub timeout: Duration,
    /// A netrc file the client reads (`netrc-file`), for a private cache.
    pub netrc: Option<PathBuf>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            method: Method::Substitute,
            nix: Nix::Host,
            timeout: Duration::from_secs(300),
            netrc: None,
        }
    }
}

impl FetchOptions {
    /// `nix-store -r` with `nix`.
    pub fn with(nix: Nix) -> Self {
        FetchOptions {
            nix,
            ..Self::default()
        }
    }

    /// `nix copy --from` with `nix`.
    pub fn copy(nix: Nix) -> Self {
        FetchOptions {
            method: Method::Copy,
            nix,
            ..Self::default()
        }
    }
}

/// What the client made of the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOutcome {
    /// Every requested path and its closure arrived and verified; `took`: the fetch alone
    /// (Nix's command, not the verification after it).
    Ok {
        paths: Vec<String>,
        nar_bytes: u64,
        took: Duration,
    },
    /// Nix refused the data: a missing or unknown signature, a NAR hash
    /// mismatch, or a NAR that does not decompress. `reason` is Nix's line.
    Rejected { reason: String },
}

impl ClientOutcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, ClientOutcome::Ok { .. })
    }

    /// An error unless this is `Ok` with exactly the closure of `cache.root`
    /// (every path of the fixture) and its NAR bytes.
    pub fn expect_whole_closure(&self, cache: &UpstreamCache) -> Result<()> {
        let ClientOutcome::Ok { paths, nar_bytes, .. } = self else {
            bail!("expected the closure, got {self:?}")
        };
        let mut expected = cache.paths.clone();
        expected.sort();
        ensure!(*paths == expected, "fetched {paths:?}, expected {expected:?}");
        let mut expected_bytes = 0;
        for path in &cache.paths {
            expected_bytes += cache.narinfo_for(path)?.nar_size()?;
        }
        ensure!(
            *nar_bytes == expected_bytes,
            "fetched {nar_bytes} NAR bytes, expected {expected_bytes}"
        );
        Ok(())
    }

    /// The reason of a `Rejected`, else an error.
    pub fn expect_rejected(&self) -> Result<&str> {
        match self {
            ClientOutcome::Rejected { reason } => Ok(reason),
            other => bail!("expected Nix to refuse the data, got {other:?}"),
        }
    }
}

/// Fetches `paths` with `nix`, expecting it to refuse the data; returns its reason.
pub async fn fetch_rejected(url: &str, trusted_key: &str, paths: &[&str], nix: Nix) -> Result<String> {
    let outcome = fetch(url, trusted_key, paths, &FetchOptions::with(nix)).await?;
    Ok(outcome.expect_rejected()?.to_string())
}

/// Nix's words when it refuses data (testbed README, "Findings" 4).
const REJECTIONS: &[&str] = &[
    // 2.8: "… is not signed by any of the keys"; 2.34: "ignoring substitute for …, as it's not
    // signed by any of the keys in 'trusted-public-keys'".
    "not signed by any of the keys",
    "lacks a valid signature",
    "lacks a signature",
    "hash mismatch",
    "Corrupted input",
    "library error",
    "Failed to open archive",
];

/// Fetches `paths` (and their closures) from `url` into a new store root
/// with a real Nix client, trusting only `trusted_key` (`name:base64`).
/// Any failure other than a refusal of the data is an `Err` with Nix's output.
pub async fn fetch(
    url: &str,
    trusted_key: &str,
    paths: &[impl AsRef<str>],
    opts: &FetchOptions,
) -> Result<ClientOutcome> {
    let paths: Vec<&str> = paths.iter().map(AsRef::as_ref).collect();
    ensure!(!paths.is_empty(), "no paths to fetch");
    let client = ClientDirs::new(opts.nix)?;
    let store = client.store.display().to_string();
    let mut args: Vec<&str> = match opts.method {
        Method::Substitute => vec!["nix-store", "--store", &store, "-r"],
        Method::Copy => vec!["nix", "copy", "--from", url, "--to", &store],
    };
    args.extend(&paths);
    args.extend([
        "--option",
        "substituters",
        url,
        "--option",
        "trusted-public-keys",
        trusted_key,
    ]);
    args.extend([
        "--option",
        "require-sigs",
        "true",
        "--option",
        "connect-timeout",
        "5",
    ]);
    args.extend([
        "--option",
        "narinfo-cache-negative-ttl",
        "0",
        "--option",
        "narinfo-cache-positive-ttl",
        "0",
    ]);
    let netrc = match &opts.netrc {
        // Copied where either client sees it (the modern one sees only its root and /tmp).
        Some(file) => {
            let copy = client.tmp.path().join("netrc");
            std::fs::copy(file, &copy).with_context(|| format!("copy {}", file.display()))?;
            copy.display().to_string()
        }
        None => String::new(),
    };
    if !netrc.is_empty() {
        args.extend(["--option", "netrc-file", &netrc]);
    }
    let started = std::time::Instant::now();
    let out = client.run(&args, opts.timeout).await?;
    let took = started.elapsed();
    let text = output_text(&out);
    if !out.status.success() {
        if let Some(reason) = rejection_reason(&text) {
            return Ok(ClientOutcome::Rejected { reason });
        }
        bail!(
            "nix could not fetch {paths:?} from {url} ({:?}, {}):\n{}",
            opts.nix,
            out.status,
            summary(&text)
        );
    }
    match client.verify(trusted_key, &paths, opts.timeout).await? {
        ClientOutcome::Ok { paths, nar_bytes, .. } => Ok(ClientOutcome::Ok {
            paths,
            nar_bytes,
            took,
        }),
        rejected => Ok(rejected),
    }
}

/// What `nix copy --to` said.
#[derive(Clone, Debug)]
pub struct PushOutcome {
    pub ok: bool,
    /// Nix's output, summarised.
    pub output: String,
}

/// What [`push`] pushes, from where, to where.
#[derive(Clone, Debug)]
pub struct Push<'a> {
    /// A binary cache URL the paths are first copied from (the modern client sees only
    /// loopback servers and `/tmp`, so an `http://` URL is the portable choice).
    pub source: &'a str,
    /// The key `source` signs with.
    pub source_key: &'a str,
    /// Where `nix copy --to` uploads.
    pub to_url: &'a str,
    /// The paths (their closures go too).
    pub paths: &'a [&'a str],
    pub nix: Nix,
    pub timeout: Duration,
}

/// Pushes the way a builder does: the paths are first copied from the binary cache
/// `push.source` into a fresh store, then `nix copy --to` uploads them, with credentials from
/// `netrc_file` (copied into the client's scratch directory, where either client sees it).
pub async fn push(push: &Push<'_>, netrc_file: &std::path::Path) -> Result<PushOutcome> {
    let Push {
        source,
        source_key,
        to_url,
        paths,
        nix,
        timeout,
    } = *push;
    let client = ClientDirs::new(nix)?;
    let store = client.store.display().to_string();
    let mut args = vec!["nix", "copy", "--from", source, "--to", &store];
    args.extend(paths);
    args.extend(["--option", "trusted-public-keys", source_key]);
    let out = client.run(&args, timeout).await?;
    ensure!(
        out.status.success(),
        "nix copy from {source} failed:\n{}",
        output_text(&out)
    );
    let netrc = client.tmp.path().join("netrc");
    std::fs::copy(netrc_file, &netrc).with_context(|| format!("copy {}", netrc_file.display()))?;
    let netrc = netrc.display().to_string();
    let mut args = vec!["nix", "copy", "--from", &store, "--to", to_url];
    args.extend(paths);
    args.extend([
        "--option",
        "netrc-file",
        &netrc,
        "--option",
        "narinfo-cache-negative-ttl",
        "0",
    ]);
    let out = client.run(&args, timeout).await?;
    Ok(PushOutcome {
        ok: out.status.success(),
        output: summary(&output_text(&out)),
    })
}

/// The first line of Nix's output that says it refused the data.
pub fn rejection_reason(output: &str) -> Option<String> {
    output
        .lines()
        .find(|l| REJECTIONS.iter().any(|r| l.contains(r)))
        .map(|l| l.trim().to_string())
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Nix's output less the per-path lines, at most 40 lines.
fn summary(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("copying path") && !l.starts_with("  /nix/store/") && !l.trim().is_empty())
        .collect();
    let mut out: Vec<String> = lines.iter().take(40).map(|l| format!("    nix: {l}")).collect();
    if lines.len() > 40 {
        out.push(format!("    nix: ... ({} more lines)", lines.len() - 40));
    }
    out.join("\n")
}

/// A fresh store root and a private `XDG_CACHE_HOME` (no narinfo cache from
/// earlier runs) for one client; both removed on drop.
struct ClientDirs {
    nix: Nix,
    tmp: TempDir,
    store: PathBuf,
}

impl ClientDirs {
    fn new(nix: Nix) -> Result<ClientDirs> {
        let tmp = tempfile::Builder::new()
            .prefix("nixcache-e2e-client-")
            .tempdir_in(nix.temp_root())?;
        let store = tmp.path().join("store");
        std::fs::create_dir(&store)?;
        Ok(ClientDirs { nix, tmp, store })
    }

    async fn run(&self, args: &[&str], timeout: Duration) -> Result<Output> {
        let mut cmd = self.nix.command(args[0])?;
        cmd.args(&args[1..])
            .env("XDG_CACHE_HOME", self.tmp.path().join("xdg-cache"))
            .env("NIX_CONFIG", crate::util::NIX_CONFIG)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        for var in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
        ] {
            cmd.env_remove(var);
        }
        match tokio::time::timeout(timeout, cmd.output()).await {
            Ok(out) => out.with_context(|| format!("cannot run {}", args[0])),
            Err(_) => bail!(
                "{} ({:?}) timed out after {timeout:?}: {args:?}",
                args[0],
                self.nix
            ),
        }
    }
}

impl Drop for ClientDirs {
    fn drop(&mut self) {
        // Store paths are read-only: make them writable, then remove.
        let _ = remove_tree(self.tmp.path());
    }
}
