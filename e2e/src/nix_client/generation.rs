//! Which Nix client a test drives. Users run everything from Debian bookworm's Nix 2.8 (2022) to
//! today's 2.3x, and they differ on the wire (HTTP/2, `Content-Encoding`, retries, upload order),
//! so every protocol-visible test runs with both: the host's Nix, and a current one from Debian
//! unstable in a root of its own, run through the `nixcache-nix-modern` runner that
//! `e2e/nix/modern-nix.sh` writes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::{e2e_required, nix_available};

/// A Nix client generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Nix {
    /// The host's `nix`/`nix-store` on `PATH` (Debian bookworm: 2.8).
    #[default]
    Host,
    /// A current Nix (Debian unstable: 2.34 in December 2026), through the runner.
    Modern,
}

/// What a modern-Nix test prints (or panics with) when the runner is missing.
pub const MODERN_SKIP_MESSAGE: &str = "SKIP e2e (current Nix): no nixcache-nix-modern runner \
     (run e2e/nix/modern-nix.sh, or set NIXCACHE_NIX_MODERN)";

impl Nix {
    /// True when this client runs (the host's Nix builds the fixtures, so both need it).
    /// Otherwise prints a SKIP line and returns false, or panics under `CI` or
    /// `NIXCACHE_E2E_REQUIRED=1`. The first call for the modern client prints its version.
    pub fn available(self) -> bool {
        if !nix_available() {
            return false;
        }
        match self {
            Nix::Host => true,
            Nix::Modern => {
                if modern_version().is_some() {
                    return true;
                }
                if e2e_required() {
                    panic!("{MODERN_SKIP_MESSAGE} (and CI or NIXCACHE_E2E_REQUIRED=1 is set, so this is a failure)");
                }
                let _ = writeln!(std::io::stderr(), "{MODERN_SKIP_MESSAGE}");
                false
            }
        }
    }

    /// A command running `program` (`nix`, `nix-store`) of this client; an error for the
    /// modern one without its runner (never the host's Nix in its place).
    pub fn command(self, program: &str) -> anyhow::Result<tokio::process::Command> {
        match self {
            Nix::Host => Ok(tokio::process::Command::new(program)),
            Nix::Modern => {
                let runner = modern_runner().ok_or_else(|| anyhow::anyhow!(MODERN_SKIP_MESSAGE))?;
                let mut cmd = tokio::process::Command::new(runner);
                cmd.arg(program);
                Ok(cmd)
            }
        }
    }

    /// What this client says when no trusted key signed a narinfo: the words changed between
    /// generations (the rejection itself did not).
    pub fn unsigned_words(self) -> &'static str {
        match self {
            Nix::Host => "is not signed by any of the keys",
            Nix::Modern => "as it's not signed by any of the keys in 'trusted-public-keys'",
        }
    }

    /// Where this client's scratch directories go: the modern client sees only its root and
    /// the host's `/tmp`, whatever `TMPDIR` says.
    pub fn temp_root(self) -> PathBuf {
        match self {
            Nix::Host => std::env::temp_dir(),
            Nix::Modern => PathBuf::from("/tmp"),
        }
    }
}

/// The runner: `NIXCACHE_NIX_MODERN`, else `nixcache-nix-modern` on `PATH`, else where
/// `e2e/nix/modern-nix.sh` puts it by default.
fn modern_runner() -> Option<&'static Path> {
    static RUNNER: OnceLock<Option<PathBuf>> = OnceLock::new();
    RUNNER
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("NIXCACHE_NIX_MODERN").filter(|p| !p.is_empty()) {
                return Some(PathBuf::from(path));
            }
            let on_path = std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("nixcache-nix-modern"))
                    .find(|p| p.is_file())
            });
            let default = std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/nixcache-tools/bin/nixcache-nix-modern"));
            on_path.or(default.filter(|p| p.is_file()))
        })
        .as_deref()
}

/// `nix --version` of the modern client, once per test process (printed), or `None` when it
/// does not run.
pub fn modern_version() -> Option<&'static str> {
    static VERSION: OnceLock<Option<String>> = OnceLock::new();
    VERSION
        .get_or_init(|| {
            let runner = modern_runner()?;
            let out = std::process::Command::new(runner)
                .args(["nix", "--version"])
                .stdin(std::process::Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())?;
            let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let _ = writeln!(
                std::io::stderr(),
                "[nixcache-e2e] current Nix client: {version} ({})",
                runner.display()
            );
            Some(version)
        })
        .as_deref()
}

/// One test per Nix client generation for each scenario: `mod NAME { host_nix, modern_nix }`,
/// each calling `SCENARIO(ARGS.., Nix)` after checking that its client runs.
///
/// ```text
/// nixcache_e2e::each_nix! {
///     xz_closure_substitutes: substitute_then_serve_alone("xz", Method::Substitute);
/// }
/// ```
#[macro_export]
macro_rules! each_nix {
    ($($name:ident: $scenario:ident($($arg:expr),* $(,)?);)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn host_nix() -> anyhow::Result<()> {
                if !$crate::Nix::Host.available() {
                    return Ok(());
                }
                super::$scenario($($arg,)* $crate::Nix::Host).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn modern_nix() -> anyhow::Result<()> {
                if !$crate::Nix::Modern.available() {
                    return Ok(());
                }
                super::$scenario($($arg,)* $crate::Nix::Modern).await
            }
        }
    )*};
}
