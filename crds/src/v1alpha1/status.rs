//! What the operator observed, written to `status`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::CacheStatus;

/// Condition type: the cache serves (at least one replica is ready on the current spec).
pub const CONDITION_READY: &str = "Ready";
/// Condition type: a migration or a rollout is under way.
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// Condition type: something needs the user's attention; the reason and message say what.
pub const CONDITION_DEGRADED: &str = "Degraded";

/// Observed state of a NixCache.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NixCacheStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`, each with a reason and a message saying what to do.
    // A list keyed by `type` (as Kubernetes' own conditions): server-side apply merges entries by
    // type, and the API server refuses two conditions of one type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Replicas that exist (for the scale subresource).
    #[serde(default)]
    pub replicas: i32,
    /// Replicas that pass their readiness check (`/readyz`: database and storage answer).
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the replicas' pods (for the scale subresource and autoscalers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// URL of the cache inside the cluster, for `substituters` in nix.conf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The cache's public key, for `trusted-public-keys` in nix.conf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The lines a client inside the cluster adds to its `nix.conf` (`substituters` and
    /// `trusted-public-keys`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nix_conf: Option<String>,
    /// The image the replicas run (or are rolling to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The latest migration Job that succeeded (PostgreSQL and MySQL only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_job: Option<String>,
    /// The cache at a glance: size, hit ratio, upstreams, last GC and fsck, read from the ready
    /// replicas' `/status` every minute (the operator's `--cache-status-interval`). Sizes, paths
    /// and the last GC and fsck are the shared database's; hits and bytes are summed over the
    /// replicas that answered. What a replica's image does not report is left out. When no
    /// replica answers, the last figures stand and `observedAt` ages. Absent for a private cache
    /// (`spec.private`), whose `/status` needs a credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheStatus>,
}

impl NixCacheStatus {
    /// The condition of this type, if any.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}
