//! `nixcache-operator`: flags and environment → telemetry → client → [`nixcache_operator::run`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use nixcache_operator::cache_status;
use nixcache_operator::config::DEFAULT_PROXY_REPOSITORY;
use nixcache_operator::controller::Scope;
use nixcache_operator::leader::LeaseConfig;
use nixcache_operator::{Config, Context, RunOptions};

/// Kubernetes operator for nixcache: reconciles NixCache resources (nixcache.dev/v1alpha1).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "NIXCACHE_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Proxy image for NixCaches without spec.image: a repository (tagged with the operator's
    /// version) or a full reference with a tag or digest.
    #[arg(long, env = "NIXCACHE_OPERATOR_PROXY_IMAGE", default_value = DEFAULT_PROXY_REPOSITORY)]
    proxy_image: String,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "NIXCACHE_OPERATOR_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Elect a leader with a Lease, so that several replicas never act at once.
    #[arg(long, env = "NIXCACHE_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "NIXCACHE_OPERATOR_LEASE_NAME",
        default_value = "nixcache-operator"
    )]
    lease_name: String,
    /// Namespace of the leader Lease (the operator's own; from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease and in events (from the downward API).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long the Lease is valid without renewal.
    #[arg(long, env = "NIXCACHE_OPERATOR_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
    /// The leader steps down when it could not renew for this long.
    #[arg(long, env = "NIXCACHE_OPERATOR_RENEW_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    renew_deadline: Duration,
    /// Pause between attempts to acquire or renew the Lease.
    #[arg(long, env = "NIXCACHE_OPERATOR_RETRY_PERIOD", default_value = "2s", value_parser = humantime::parse_duration)]
    retry_period: Duration,
    /// How often the replicas' /status is read into each NixCache's status.cache (size, hit
    /// ratio, upstreams, last GC and fsck); 0 turns it off.
    #[arg(long, env = "NIXCACHE_OPERATOR_CACHE_STATUS_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    cache_status_interval: Duration,
    /// Log format: `json` or `text`.
    #[arg(long, env = "NIXCACHE_OPERATOR_LOG_FORMAT", default_value = "json")]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    nixcache_operator::telemetry::init(args.log_format != "text");
    anyhow::ensure!(
        args.renew_deadline < args.lease_duration,
        "--renew-deadline must be shorter than --lease-duration"
    );
    // One attempt may take a retry period: the leader must get more than one before its deadline.
    anyhow::ensure!(
        args.retry_period < args.renew_deadline,
        "--retry-period must be shorter than --renew-deadline"
    );
    // kube's TLS needs a process-wide crypto provider; name it rather than rely on exactly one
    // being compiled in (a binary built alone once had none and panicked here).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .context("cannot configure the Kubernetes client (in-cluster or KUBECONFIG)")?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("nixcache-operator-{}", std::process::id()));
    let metrics = Arc::default();
    let ctx = Arc::new(Context::new(
        client,
        Config::new(&args.proxy_image),
        metrics,
        Some(identity.clone()),
    ));
    let options = RunOptions {
        admin_listen: args.listen,
        scope: args.watch_namespace.map_or(Scope::Cluster, Scope::Namespace),
        leader_election: args.leader_election.then_some(LeaseConfig {
            name: args.lease_name,
            namespace: args.lease_namespace,
            identity,
            lease_duration: args.lease_duration,
            renew_deadline: args.renew_deadline,
            retry_period: args.retry_period,
        }),
        cache_status: (!args.cache_status_interval.is_zero())
            .then(|| cache_status::Options::every(args.cache_status_interval)),
    };
    nixcache_operator::run(ctx, options, nixcache_operator::shutdown_on_signal()).await?;
    Ok(())
}
