//! One NixCache: its ready replicas asked, their answers written to `status.cache`.

use std::net::{IpAddr, SocketAddr};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use nixcache_crds::{CacheStatus, NixCache};

use super::aggregate::{self, Answer};
use super::client::{self, PollResult};
use super::Options;
use crate::context::Context;
use crate::render::{self, CONTAINER_PORT};
use crate::{Error, Result};

/// The field manager of `status.cache`: not the reconciler's, so neither removes the other's
/// fields from the status.
pub const STATUS_MANAGER: &str = "nixcache-operator-cache-status";

/// A replica to ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The pod's name, for logs.
    pub pod: String,
    /// Its IP and the proxy's port.
    pub addr: SocketAddr,
    /// When the pod was created (Unix milliseconds).
    pub created_unix_ms: i64,
}

/// The replicas of `pods` worth asking: ready, not being deleted, with an IP.
pub fn targets(pods: &[Pod]) -> Vec<Target> {
    pods.iter().filter_map(target).collect()
}

fn target(pod: &Pod) -> Option<Target> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return None;
    }
    let ip: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
    Some(Target {
        pod: pod.name_any(),
        addr: SocketAddr::new(ip, proxy_port(pod)),
        created_unix_ms: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_millisecond()),
    })
}

/// The container port named `http` of the `nixcache` container (as `render::deployment` names
/// them), else the default.
fn proxy_port(pod: &Pod) -> u16 {
    let spec = pod.spec.as_ref();
    let port = spec
        .and_then(|s| s.containers.iter().find(|c| c.name == "nixcache"))
        .and_then(|c| c.ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.name.as_deref() == Some("http")))
        .map_or(CONTAINER_PORT, |p| p.container_port);
    u16::try_from(port).unwrap_or(8501)
}

/// What asking the replicas of one NixCache gave.
#[derive(Debug)]
pub struct Outcome {
    /// Replicas asked.
    pub asked: usize,
    /// The new `status.cache`; `None` when none answered.
    pub status: Option<CacheStatus>,
    /// The first failure, for the log: `(pod, error)`.
    pub failure: Option<(String, String)>,
}

/// Asks the ready replicas of `nc` for their status (at most `options.concurrency` at once).
pub async fn poll(ctx: &Context, nc: &NixCache, options: &Options) -> Result<Outcome> {
    let ns = nc.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = render::selector_string(nc);
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube(format!("list the pods of NixCache {ns}/{}", nc.name_any()), e))?;
    let targets = targets(&listed.items);
    let asked = targets.len();
    let results: Vec<_> = futures::stream::iter(targets)
        .map(|t| async move {
            (
                t.pod,
                t.created_unix_ms,
                client::get_status(t.addr, options.timeout).await,
            )
        })
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    let mut answers = Vec::with_capacity(results.len());
    let mut failure = None;
    for (pod, created_unix_ms, result) in results {
        match result {
            Ok(report) => {
                ctx.metrics.status_polled(PollResult::Ok);
                answers.push(Answer {
                    created_unix_ms,
                    report,
                });
            }
            Err(error) => {
                ctx.metrics.status_polled(error.result());
                tracing::debug!(%pod, namespace = %ns, %error, "cannot read a replica's /status");
                failure.get_or_insert((pod, error.to_string()));
            }
        }
    }
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    Ok(Outcome {
        asked,
        status: aggregate::cache_status(asked, &answers, &now),
        failure,
    })
}

/// Writes `cache` as `status.cache` of `nc` (server-side apply under [`STATUS_MANAGER`]: the
/// reconciler's status fields are not touched).
pub async fn write(ctx: &Context, nc: &NixCache, cache: &CacheStatus) -> Result<()> {
    let ns = nc.namespace().unwrap_or_default();
    let api: Api<NixCache> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({
        "apiVersion": "nixcache.dev/v1alpha1",
        "kind": "NixCache",
        "status": { "cache": cache },
    });
    api.patch_status(
        &nc.name_any(),
        &PatchParams::apply(STATUS_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| {
        Error::kube(
            format!("write status.cache of NixCache {ns}/{}", nc.name_any()),
            e,
        )
    })?;
    Ok(())
}
