//! End-to-end test harness for nixcache: a real signed upstream binary cache
//! built offline with Nix ([`fixtures`]), served in-process with counters and
//! faults ([`upstream`]), the real `nixcache serve` binary ([`proxy`]) and a
//! real Nix client ([`nix_client`]).
//!
//! Tests call [`nix_available`] first: without Nix they print a SKIP line and
//! pass, unless `CI` or `NIXCACHE_E2E_REQUIRED=1` is set, when they fail.

pub mod bench;
pub mod cluster;
pub mod fixtures;
pub mod http;
pub mod kube;
pub mod narinfo;
pub mod nix_client;
pub mod prometheus;
pub mod proxy;
pub mod throttle;
pub mod upstream;
pub mod util;
pub mod writable;

use std::io::Write;
use std::sync::OnceLock;

pub use fixtures::Variant;
pub use fixtures::{generate_signing_key, CaCache, SigningKey, UpstreamCache};
pub use narinfo::NarInfo;
pub use nix_client::{
    fetch, fetch_rejected, look_up_paths, push, ClientOutcome, FetchOptions, Method, Nix, Push, PushOutcome,
};
pub use proxy::{Proxy, ProxyOptions};
pub use upstream::{Faults, Stats, TestUpstream};
pub use writable::WritableProxy;

/// What a test prints (or panics with) when Nix is missing.
pub const SKIP_MESSAGE: &str = "SKIP e2e: nix is not installed (run .ci/run or apt-get install nix-bin)";

/// True when `nix-store` runs. Otherwise prints [`SKIP_MESSAGE`] and returns
/// false, or panics with it when `CI` is set or `NIXCACHE_E2E_REQUIRED=1`.
pub fn nix_available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    let found = *FOUND.get_or_init(|| {
        std::process::Command::new("nix-store")
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !found {
        if e2e_required() {
            panic!("{SKIP_MESSAGE} (and CI or NIXCACHE_E2E_REQUIRED=1 is set, so this is a failure)");
        }
        // Past libtest's output capture, so the skip shows in a normal run.
        let _ = writeln!(std::io::stderr(), "{SKIP_MESSAGE}");
    }
    found
}

pub(crate) fn e2e_required() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    ci || std::env::var("NIXCACHE_E2E_REQUIRED").is_ok_and(|v| v == "1")
}
