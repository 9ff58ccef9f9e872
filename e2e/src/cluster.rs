//! [`Cluster`]: several `nixcache serve` processes sharing metadata and storage, as replicas
//! behind one Service would.

use std::process::Command;

use anyhow::{ensure, Context, Result};
use nixcache::db::{testdb::TestDb, Engine};
use nixcache_testsupport::s3::{S3sFs, CREDENTIAL_ENV};
use tempfile::TempDir;

use crate::proxy::{nixcache_bin, Proxy, ProxyOptions};

/// What the replicas share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// One data dir: one SQLite database, one NAR directory, one key (one machine, several
    /// processes; the cheapest way to run the cross-replica paths).
    SharedDir,
    /// A fresh PostgreSQL database and an S3 bucket on a real s3s-fs; a data dir each.
    PostgresS3,
    /// The same with MariaDB/MySQL.
    MySqlS3,
}

/// The services a cluster shares; dropped with it (the database too).
struct Shared {
    dir: TempDir,
    _db: Option<TestDb>,
    _s3: Option<S3sFs>,
    /// Where the stored objects are files: the NAR directory, or the S3 server's directory of
    /// the bucket's `cluster/nar/` prefix.
    objects: std::path::PathBuf,
    /// Flags and environment every replica gets.
    args: Vec<String>,
    env: Vec<(String, String)>,
}

pub struct Cluster {
    pub replicas: Vec<Proxy>,
    shared: Shared,
}

/// Short leases, so a killed replica's download is taken over within seconds.
const LEASE_TTL: &str = "2s";

impl Cluster {
    /// Starts `n` replicas over `upstream`, trusting `upstream_key`. `None` (after a `SKIP`
    /// line) when the backend's services are missing and not required.
    pub async fn start(
        backend: Backend,
        n: usize,
        upstream: &str,
        upstream_key: &str,
    ) -> Result<Option<Cluster>> {
        let Some(shared) = Shared::start(backend).await? else {
            return Ok(None);
        };
        let mut cluster = Cluster {
            replicas: Vec::with_capacity(n),
            shared,
        };
        for _ in 0..n {
            cluster.add_replica(upstream, upstream_key).await?;
        }
        Ok(Some(cluster))
    }

    /// Starts one more replica (e.g. to replace a killed one).
    pub async fn add_replica(&mut self, upstream: &str, upstream_key: &str) -> Result<&Proxy> {
        self.add_replica_with(upstream, upstream_key, &[]).await
    }

    /// Like [`Self::add_replica`], with more `serve` flags.
    pub async fn add_replica_with(
        &mut self,
        upstream: &str,
        upstream_key: &str,
        extra: &[&str],
    ) -> Result<&Proxy> {
        let mut opts = ProxyOptions::new(upstream, upstream_key);
        opts.extra_args = self.shared.args.clone();
        opts.extra_args.extend(extra.iter().map(|s| s.to_string()));
        opts.extra_args.extend(["--lease-ttl".into(), LEASE_TTL.into()]);
        opts.env = self.shared.env.clone();
        if self.shared.args.is_empty() {
            opts.data_dir = Some(self.shared.dir.path().join("data"));
        }
        self.replicas.push(Proxy::start(opts).await?);
        self.replicas.last().context("no replica")
    }

    /// The flags naming this cluster's database and storage (`--data-dir` included), as `serve`
    /// and `gc` take them, and the environment they need (S3 credentials).
    pub fn backend(&self) -> (Vec<String>, Vec<(String, String)>) {
        let mut args = self.shared.args.clone();
        if args.is_empty() {
            args.extend([
                "--data-dir".into(),
                self.shared.dir.path().join("data").display().to_string(),
            ]);
        }
        args.retain(|a| a != "--secret-key-file" && !a.ends_with("cluster.sec"));
        (args, self.shared.env.clone())
    }

    /// The S3 endpoint the replicas are given (S3 backends only).
    pub fn s3_endpoint(&self) -> Option<&str> {
        let args = &self.shared.args;
        let at = args.iter().position(|a| a == "--s3-endpoint")?;
        args.get(at + 1).map(String::as_str)
    }

    /// Replicas started from now on reach S3 at `endpoint` (a relay in front of the server).
    pub fn set_s3_endpoint(&mut self, endpoint: &str) -> Result<()> {
        let args = &mut self.shared.args;
        let at = args
            .iter()
            .position(|a| a == "--s3-endpoint")
            .context("not an S3 cluster")?;
        let value = args.get_mut(at + 1).context("--s3-endpoint without a value")?;
        *value = endpoint.to_string();
        Ok(())
    }

    /// The directory where the stored objects are files, to damage them behind the cache's back:
    /// sharded (`<first two characters>/<name>`) on a shared dir, flat in the S3 server's.
    pub fn object_dir(&self) -> &std::path::Path {
        &self.shared.objects
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

impl Shared {
    async fn start(backend: Backend) -> Result<Option<Shared>> {
        let dir = tempfile::Builder::new()
            .prefix("nixcache-e2e-cluster-")
            .tempdir()?;
        let engine = match backend {
            Backend::SharedDir => {
                return Ok(Some(Shared {
                    objects: dir.path().join("data/nar"),
                    dir,
                    _db: None,
                    _s3: None,
                    args: Vec::new(),
                    env: Vec::new(),
                }))
            }
            Backend::PostgresS3 => Engine::Postgres,
            Backend::MySqlS3 => Engine::MySql,
        };
        let Some(db) = TestDb::fresh(engine).await else {
            return Ok(None);
        };
        let Some(s3) = S3sFs::start().await? else {
            return Ok(None);
        };
        let bucket = s3.create_bucket()?;
        let bin = tokio::task::spawn_blocking(nixcache_bin).await??;
        run(Command::new(&bin).args(["migrate", "--database-url", db.url()]))?;
        let secret = dir.path().join("cluster.sec");
        let public = dir.path().join("cluster.pub");
        run(Command::new(&bin)
            .arg("keygen")
            .arg("e2e-cluster-1")
            .arg("--secret-key-file")
            .arg(&secret)
            .arg("--public-key-file")
            .arg(&public))?;
        let mut args = s3.serve_args(&bucket, "cluster");
        args.extend(["--database-url".into(), db.url().into()]);
        args.extend(["--secret-key-file".into(), secret.display().to_string()]);
        let env = CREDENTIAL_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(Some(Shared {
            objects: s3.data_dir().join(&bucket).join("cluster/nar"),
            dir,
            _db: Some(db),
            _s3: Some(s3),
            args,
            env,
        }))
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
