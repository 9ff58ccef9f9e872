//! [`Cluster`]: several `nixcache serve` processes sharing metadata and storage, as replicas
//! behind one Service would.

use anyhow::Result;
use tempfile::TempDir;

use crate::proxy::{Proxy, ProxyOptions};

/// What the replicas share.
#[derive(Clone, Debug)]
pub enum Backend {
    /// One data dir: one SQLite database, one NAR directory, one key (one machine, several
    /// processes; the cheapest way to run the cross-replica paths).
    SharedDir,
}

pub struct Cluster {
    pub replicas: Vec<Proxy>,
    _shared: TempDir,
}

/// Short leases, so a killed replica's download is taken over within seconds.
const LEASE_TTL: &str = "2s";

impl Cluster {
    /// Starts `n` replicas over `upstream`, trusting `upstream_key`.
    pub async fn start(backend: Backend, n: usize, upstream: &str, upstream_key: &str) -> Result<Cluster> {
        let shared = tempfile::Builder::new()
            .prefix("nixcache-e2e-cluster-")
            .tempdir()?;
        let mut replicas = Vec::with_capacity(n);
        for _ in 0..n {
            let mut opts = ProxyOptions::new(upstream, upstream_key);
            opts.extra_args = vec!["--lease-ttl".into(), LEASE_TTL.into()];
            match backend {
                Backend::SharedDir => opts.data_dir = Some(shared.path().join("data")),
            }
            replicas.push(Proxy::start(opts).await?);
        }
        Ok(Cluster {
            replicas,
            _shared: shared,
        })
    }

    /// Indices of the replicas whose log contains `text` (e.g. `"fetching NAR"`: the ones that
    /// downloaded from the upstream).
    pub fn logging(&self, text: &str) -> Vec<usize> {
        self.replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| std::fs::read_to_string(&r.log_file).is_ok_and(|log| log.contains(text)))
            .map(|(i, _)| i)
            .collect()
    }
}
