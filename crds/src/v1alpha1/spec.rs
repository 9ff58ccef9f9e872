//! The `NixCache` resource and its top-level spec.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, LocalObjectReference, ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Autoscaling, Database, Fsck, GarbageCollection, NixCacheStatus, Pin, PodDisruptionBudgetSpec, Private,
    ServiceSpec, Signing, Storage, Uploads, Upstream, Warm, MAX_DECLARED_PINS,
};

/// A caching, verifying proxy for Nix binary caches, run as `nixcache serve` replicas behind a
/// Service. Replicas share their metadata (PostgreSQL or MySQL) and NARs (S3), sign with one key,
/// and are migrated before a new version serves; a single replica may instead keep SQLite and the
/// NARs on a PersistentVolumeClaim.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "nixcache.dev",
    version = "v1alpha1",
    kind = "NixCache",
    plural = "nixcaches",
    shortname = "nxc",
    category = "nixcache",
    namespaced,
    status = "NixCacheStatus",
    derive = "PartialEq",
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 42")
        .message("metadata.name of a NixCache must be a DNS label of at most 42 characters (it prefixes the names of its Service, Jobs and CronJob)")
        .reason(Reason::FieldValueInvalid),
    doc = "A NixCache runs a caching, verifying proxy for Nix binary caches (nixcache) in this namespace.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Size", type_ = "string", json_path = ".status.cache.size", description = "Size of the cached NARs and the GC's limit"),
    printcolumn(name = "Hit ratio", type_ = "string", json_path = ".status.cache.hitRatioLastHour", description = "Lookups served from the cache in the last hour"),
    printcolumn(name = "Upstreams", type_ = "string", json_path = ".status.cache.upstreamHealth", description = "Upstreams up, of all"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url", priority = 1),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.database.sqlite) || self.replicas <= 1")
        .message("database.sqlite serves one replica only: set replicas to 0 or 1, or use database.urlSecretRef (PostgreSQL or MySQL) to run more")
        .field_path(".replicas")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.database.sqlite) || !has(self.autoscaling)")
        .message("database.sqlite serves one replica only: autoscaling needs database.urlSecretRef (PostgreSQL or MySQL) and storage.s3")
        .field_path(".autoscaling")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.database.sqlite) || has(self.storage.persistentVolumeClaim)")
        .message("database.sqlite keeps its file on the cache's volume: set storage.persistentVolumeClaim (or use database.urlSecretRef with storage.s3)")
        .field_path(".storage")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.storage.persistentVolumeClaim) || self.replicas <= 1")
        .message("storage.persistentVolumeClaim serves one replica only: set replicas to 0 or 1, or use storage.s3 to run more")
        .field_path(".replicas")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.storage.persistentVolumeClaim) || !has(self.autoscaling)")
        .message("storage.persistentVolumeClaim serves one replica only: autoscaling needs storage.s3")
        .field_path(".autoscaling")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.fsck) || self.fsck.repair || !has(self.storage.persistentVolumeClaim)")
        .message("fsck.repair: false needs storage.s3 (a CronJob that only reports): on storage.persistentVolumeClaim the replica runs fsck itself and always repairs")
        .field_path(".fsck.repair")
        .reason(Reason::FieldValueForbidden),
)]
pub struct NixCacheSpec {
    /// Number of `nixcache serve` replicas (default 1). Ignored while `autoscaling` is set. More
    /// than one needs `database.urlSecretRef` and `storage.s3`. `kubectl scale` sets this field.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,

    /// Container image of the proxy (default: `ghcr.io/nixcache/nixcache` at the operator's own
    /// version). Changing it first runs `nixcache migrate` with the new image (for PostgreSQL and
    /// MySQL), and only then rolls the replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,

    /// Image pull policy of every container: `Always`, `IfNotPresent` or `Never` (default: the
    /// cluster's default for the image tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Secrets with credentials for pulling the image from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// Binary caches that misses are fetched from (default: https://cache.nixos.org trusting
    /// `cache.nixos.org-1`). Every narinfo must be signed by one of the listed `publicKeys` (the
    /// keys of all upstreams are trusted for every upstream). All are asked at once; the answer
    /// of the best `priority` wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<Upstream>,

    /// `Priority` this cache advertises in its own `/nix-cache-info` (lower is preferred by Nix
    /// clients; default 40, the same as cache.nixos.org).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub priority: Option<i32>,

    /// Where the NARs are kept: exactly one of `s3` (shared by any number of replicas) or
    /// `persistentVolumeClaim` (one replica).
    pub storage: Storage,

    /// Where the metadata is kept: exactly one of `urlSecretRef` (PostgreSQL or MySQL/MariaDB,
    /// shared by the replicas) or `sqlite` (one replica, on the `persistentVolumeClaim`).
    pub database: Database,

    /// The key the cache signs every narinfo it serves with. Clients trust its public half
    /// (`status.publicKey`, also served at `/pubkey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<Signing>,

    /// Least-recently-used eviction down to `maxSize`, on `schedule`. Unset: nothing is evicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc: Option<GarbageCollection>,

    /// Store paths garbage collection never evicts, whatever `gc.maxSize` says, each with its
    /// closure (everything it references, as far as the cache holds it) unless `closure: false`.
    /// A path need not be cached yet: it is kept once it is. The list is passed to the replicas
    /// (`serve --pin-closure`/`--pin`), so changing it rolls them out (on
    /// `storage.persistentVolumeClaim` the one replica restarts), and each replica makes the
    /// cache's declared pins exactly this list when it starts: a path removed from the list, or
    /// every path when the list is removed, is unpinned at that rollout. A listed path pinned by
    /// hand before (`nixcache pin`) becomes a declared pin, and removing it from the list unpins
    /// it. The list is applied only when a replica starts: with `replicas: 0` a change waits for
    /// the next one, and during a rollout an old replica that restarts late applies the old list
    /// until a new one starts again. Needs a proxy image with pins (this operator's version or
    /// newer). At most 1000 paths, each listed once: every path is a command-line argument of the
    /// replicas (pin more with `nixcache pin`, or over HTTP with `extraArgs: ["--allow-pins"]`
    /// and `spec.uploads` credentials, up to 10,000 in all).
    // Keyed by `storePath`: the API server refuses a path listed twice (no CEL rule, whose cost
    // grows with the square of the list), and server-side apply merges entries by path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_DECLARED_PINS),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["storePath"])
    )]
    pub pins: Vec<Pin>,

    /// Check the stored NARs against the database on `schedule` (`nixcache fsck`): rows whose
    /// object is missing or has the wrong size, objects no row records, and uploads still pending
    /// past their deadline; with `verify` also every object's content, re-hashed. Repairing
    /// deletes what is broken, so the next request fetches that path from upstream again; an
    /// uploaded path whose NAR is lost cannot be fetched again: it is reported in the log and the
    /// run fails. Unset: no check runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fsck: Option<Fsck>,

    /// Fetch the closures of `paths` into the cache on `schedule` (a CronJob running
    /// `nixcache warm` against the cache's own Service). Unset: nothing is fetched ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<Warm>,

    /// Make the cache private: reads need a credential too (`401` without one). Unset: anyone
    /// who reaches the Service reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<Private>,

    /// Accept `PUT` (and optionally `DELETE`) of narinfos and NARs from authenticated clients
    /// (`nix copy --to`). Unset: the cache is read-only (`405`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploads: Option<Uploads>,

    /// The Service in front of the replicas (default: ClusterIP on port 8501).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,

    /// CPU and memory of each replica (default: requests of 100m CPU and 128Mi memory, no limits).
    /// `autoscaling` needs a CPU request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Schedule the replicas only on nodes with these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the replicas' pods (and of the migration, GC, fsck and warm-up jobs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Affinity rules of the replicas' pods, e.g. spreading them over zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Extra annotations on the replicas' pods (for example for a metrics scraper or a service mesh).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,

    /// ServiceAccount the pods run as (default: the namespace's `default`); use one bound to a
    /// cloud role (EKS IRSA, GKE workload identity) to reach S3 without a credentials Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Scale the replicas on CPU with a HorizontalPodAutoscaler (`spec.replicas` is then ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,

    /// Limit voluntary disruptions (node drains) with a PodDisruptionBudget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruption_budget: Option<PodDisruptionBudgetSpec>,

    /// Extra arguments appended to `nixcache serve`, e.g. `["--negative-ttl", "5m"]`. They come
    /// after the operator's own, so a repeated flag takes this value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
}

fn default_replicas() -> i32 {
    1
}

/// When the kubelet pulls the image.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagePullPolicy {
    // Pull on every start.
    Always,
    // Pull only when the node does not have the image.
    IfNotPresent,
    // Never pull; the image must be on the node.
    Never,
}

impl ImagePullPolicy {
    /// The value Kubernetes expects in a container's `imagePullPolicy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}
