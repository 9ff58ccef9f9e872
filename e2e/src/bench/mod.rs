//! The benchmark harness behind `--bin bench`: nginx and `nixcache serve`
//! side by side on the same cache files, measured alternately in one run.
//!
//! [`procfs`] reads CPU and memory figures, [`nginx`] runs nginx from
//! `e2e/bench/nginx.conf.template`, [`wrk`] drives narinfo load, [`loadgen`]
//! is a raw keep-alive HTTP/1.1 client for NAR bodies, [`hits`],
//! [`misses`] and [`replicas`] are the scenarios (sharing [`fresh`]), [`report`]
//! prints the comparison. [`soak`] is a long mixed load on one nixcache (run only when
//! asked for), watching its resources over time.

pub mod closure;
pub mod first_byte;
pub mod fresh;
pub mod fsck;
pub mod hits;
pub mod loadgen;
pub mod misses;
pub mod nginx;
pub mod operate;
pub mod procfs;
pub mod redirected;
pub mod replicas;
pub mod report;
pub mod setup;
pub mod soak;
pub mod storage;
pub mod wrk;

use std::net::SocketAddr;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::Proxy;

/// The servers compared: nginx, one nixcache, and (in the `replicas` part
/// only) [`fresh::REPLICAS`] nixcache replicas sharing one data dir.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Nginx,
    Nixcache,
    Replicas,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::Nginx => "nginx",
            Server::Nixcache => "nixcache",
            Server::Replicas => "nixcache×3",
        }
    }
}

/// A server under test: where it listens and which processes are it.
#[derive(Clone, Debug)]
pub struct Target {
    pub server: Server,
    pub addr: SocketAddr,
    /// The main process (nginx: the master).
    pub pid: u32,
    /// Also count the children of `pid` (nginx workers).
    pub with_children: bool,
    /// The other replicas of a cluster (`addr` and `pid` are the first's):
    /// address and pid of each.
    pub replicas: Vec<(SocketAddr, u32)>,
}

impl Target {
    /// One `nixcache serve`.
    pub fn nixcache(proxy: &Proxy) -> Target {
        Target {
            server: Server::Nixcache,
            addr: proxy.addr,
            pid: proxy.pid().unwrap_or(0),
            with_children: false,
            replicas: Vec::new(),
        }
    }

    /// The replicas of a cluster, as one server.
    pub fn cluster(cluster: &Cluster) -> Target {
        let mut each = cluster.replicas.iter().map(|p| (p.addr, p.pid().unwrap_or(0)));
        let (addr, pid) = each.next().unwrap_or((SocketAddr::from(([127, 0, 0, 1], 0)), 0));
        Target {
            server: Server::Replicas,
            addr,
            pid,
            with_children: false,
            replicas: each.collect(),
        }
    }

    /// Every process of this server, as of now.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.pid];
        if self.with_children {
            pids.extend(procfs::children_of(self.pid));
        }
        pids.extend(self.replicas.iter().map(|&(_, pid)| pid));
        pids
    }

    /// Where clients may connect: one address, or one per replica.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        let mut addrs = vec![self.addr];
        addrs.extend(self.replicas.iter().map(|&(addr, _)| addr));
        addrs
    }
}

/// What the command line asked for.
#[derive(Clone, Debug)]
pub struct Settings {
    pub quick: bool,
    pub runs: usize,
    /// Length of each load run (wrk and the NAR load).
    pub duration: Duration,
    /// The command line, as typed (for the report).
    pub command: String,
    /// `--only`: the parts to run ([`PARTS`]); empty = all.
    pub only: Vec<String>,
    /// `--big-mib`: size of the fixture's big path.
    pub big_mib: u64,
    /// `--backend`: what every nixcache of the run stores into.
    pub backend: crate::cluster::Backend,
    /// `--soak-minutes` and `--soak-interval`: how long the soak runs, how often it samples.
    pub soak: soak::SoakSettings,
}

/// The parts of a run, for `--only`.
pub const PARTS: [&str; 12] = [
    "narinfo",
    "nar",
    "memory",
    "storage",
    "misses",
    "first-byte",
    "replicas",
    "closure",
    "access",
    "gc",
    "fsck",
    "soak",
];

/// Parts left out of a run without `--only` (they take minutes).
pub const ON_REQUEST: [&str; 1] = ["soak"];

/// Parts that need neither nginx nor wrk.
const WITHOUT_TOOLS: [&str; 5] = ["storage", "first-byte", "gc", "fsck", "soak"];

impl Settings {
    /// True when `part` is to be run: named by `--only`, or, without it, not [`ON_REQUEST`].
    pub fn wants(&self, part: &str) -> bool {
        if self.only.is_empty() {
            return !ON_REQUEST.contains(&part);
        }
        self.only.iter().any(|p| p == part)
    }

    /// True when a part to run needs nginx and wrk.
    pub fn needs_tools(&self) -> bool {
        PARTS.iter().any(|p| self.wants(p) && !WITHOUT_TOOLS.contains(p))
    }
}

/// Nginx first on odd runs, nixcache first on even ones, so slow drift on
/// the box does not always favour the same server.
pub fn order(run: usize) -> [Server; 2] {
    if run % 2 == 0 {
        [Server::Nginx, Server::Nixcache]
    } else {
        [Server::Nixcache, Server::Nginx]
    }
}

/// Median, min and max of `values` (NaN-free); None when empty.
pub fn summary(values: &[f64]) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((median, v[0], v[n - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        assert_eq!(summary(&[]), None);
        assert_eq!(summary(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(summary(&[4.0, 1.0, 2.0, 3.0]), Some((2.5, 1.0, 4.0)));
    }
}
