//! Upstreams, signing, GC, pins, fsck, warm-up, uploads, Service, autoscaling and disruption budget settings.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretKeyRef;

/// A binary cache that misses are fetched from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    /// Base URL, e.g. `https://cache.nixos.org` (http or https, no credentials: put those in
    /// `netrcSecretRef`; no query: the priority goes in `priority`).
    #[schemars(regex(pattern = r"^https?://[^@/?]+(/[^?]*)?$"))]
    pub url: String,
    /// Public keys (`NAME:BASE64`, as in `trusted-public-keys`) whose signatures are accepted,
    /// e.g. `cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^[^:\s]+:[A-Za-z0-9+/]{43}=$")))]
    pub public_keys: Vec<String>,
    /// Order among the upstreams (lower is asked first, as Nix's `priority`). Default: the
    /// `Priority` in the upstream's own `nix-cache-info` (cache.nixos.org says 40).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub priority: Option<i32>,
    /// Other hosts (`HOST` or `HOST:PORT`) this upstream's narinfos may name NARs on, as garnix
    /// serves NARs from a CDN (`?nar-host=` on the proxy's `--upstream`). Default: none; a NAR
    /// URL off the upstream's own origin is refused (it is not covered by the signature).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")))]
    pub nar_hosts: Vec<String>,
    /// A Secret holding a netrc file (`machine HOST login USER password PASS` lines) with
    /// Basic-auth credentials for this upstream; mounted read-only and passed as `--netrc-file`.
    /// The key defaults to `netrc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netrc_secret_ref: Option<SecretKeyRef>,
}

/// The cache's signing key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Signing {
    /// Name of the key the operator generates, as clients see it in `trusted-public-keys`
    /// (default `<name>.<namespace>-1`). Ignored with `secretRef`. Changing it later does not
    /// replace a key already generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[^:\s]+$"))]
    pub key_name: Option<String>,
    /// Use this existing Secret instead of generating one: its key (default `secret-key`) holds a
    /// secret key in Nix's format (`nix-store --generate-binary-cache-key` or `nixcache keygen`);
    /// an optional `public-key` entry is reported as is. The operator only reads it. Without
    /// it, the operator generates a key once into the Secret `<name>-signing-key` and never
    /// replaces it; deleting that Secret makes a new key that clients must trust anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// Delete the generated Secret `<name>-signing-key` together with the NixCache (it then
    /// gets an owner reference). Default false: the key outlives the NixCache, so a NixCache
    /// created again under the same name signs with the same key and clients'
    /// `trusted-public-keys` stay valid. Ignored with `secretRef` (that Secret is only read).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_with_cache: bool,
}

/// Least-recently-used eviction.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GarbageCollection {
    /// Evict least recently used NARs until the cache is below this size: bytes, or with a
    /// suffix `K`, `M`, `G`, `T` (powers of 1024), e.g. `50G`.
    #[schemars(regex(pattern = r"^[0-9]+[KMGT]?$"))]
    pub max_size: String,
    /// When to run, in cron syntax or a nickname such as `@daily` (default `17 3 * * *`, daily
    /// at 03:17). With `storage.s3` a
    /// CronJob runs `nixcache gc`; with `storage.persistentVolumeClaim` the replica itself runs it
    /// on this schedule (a second pod could not mount the volume on another node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SCHEDULE_PATTERN))]
    pub schedule: Option<String>,
    /// Time zone of `schedule`, e.g. `Europe/Berlin` (default: the controller manager's, usually UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Never evict a path a client uploaded (`spec.uploads`, `nix copy --to`), nor its uploaded
    /// build logs (default false: uploaded paths go in least-recently-used order like fetched
    /// ones). An uploaded path exists nowhere upstream, so once evicted it is lost to clients.
    /// Kept uploads still count towards `maxSize`: GC evicts fetched paths instead, and cannot
    /// shrink the cache below what the uploads take. Where the replicas collect garbage
    /// themselves (`storage.persistentVolumeClaim`), a change restarts them, as other `gc` fields do.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_uploads: bool,
}

/// A store path garbage collection never evicts: an entry of `spec.pins`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Pin {
    /// The store path, `/nix/store/<32-character hash>-<name>`, e.g. a NixOS system's toplevel
    /// or a CI toolchain. It need not be cached yet: it is kept from whenever it is.
    #[schemars(regex(pattern = STORE_PATH_PATTERN))]
    pub store_path: String,
    /// Also keep everything the path references, directly or not (its closure), as far as the
    /// cache holds it (default true). The closure is read again at every GC run, so what is
    /// cached after the pin is kept too. `false` keeps the path itself only.
    #[serde(default = "default_closure")]
    pub closure: bool,
}

fn default_closure() -> bool {
    true
}

/// Most entries of `spec.pins`: each is a `serve` argument (see `NixCacheSpec::pins`).
pub const MAX_DECLARED_PINS: u32 = 1000;

/// A check of the stored NARs against the database (`nixcache fsck`) on a schedule, repairing
/// what is broken (the field's documentation, `NixCacheSpec::fsck`, says what it checks).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Fsck {
    /// When to run, as a five-field cron expression (minute hour day-of-month month
    /// day-of-week) or a nickname (`@weekly`, `@daily`, …), e.g. `0 5 * * 0` (Sundays at 05:00). With `storage.s3` a CronJob runs
    /// `nixcache fsck` (a run still going at the next time is not started twice); with
    /// `storage.persistentVolumeClaim` the replica itself runs it on this schedule, in UTC (a
    /// second pod could not mount the volume on another node).
    #[schemars(regex(pattern = SCHEDULE_PATTERN))]
    pub schedule: String,
    /// Time zone of `schedule` for the CronJob, e.g. `Europe/Berlin` (default: the controller
    /// manager's, usually UTC). The replica on a volume reads `schedule` in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Also read every stored NAR back and compare its hash with the recorded one (default
    /// false). This reads the whole cache: slow, and on S3 billed as downloads. Without it fsck
    /// compares what exists and its size only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify: bool,
    /// Delete what is broken, so that the next request fetches it again (default true). Set to
    /// false, a run only reports, and its Job fails when something is wrong. `false` needs
    /// `storage.s3`: the replica on a volume always repairs.
    #[serde(default = "default_repair")]
    pub repair: bool,
}

impl Default for Fsck {
    fn default() -> Self {
        Self {
            schedule: String::new(),
            time_zone: None,
            verify: false,
            repair: default_repair(),
        }
    }
}

fn default_repair() -> bool {
    true
}

/// A schedule both a Kubernetes CronJob and the replica's own scheduler (`croner`) take: five
/// cron fields, or one of the nicknames both know (`@midnight` is Kubernetes' only).
pub const SCHEDULE_PATTERN: &str = r"^(@(yearly|annually|monthly|weekly|daily|hourly)|\S+(\s+\S+){4})$";

/// A store path as `nixcache warm` takes it: `/nix/store/<32 nixbase32 characters>-<name>`.
pub const STORE_PATH_PATTERN: &str = r"^/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]{1,211}$";

/// Closures fetched into the cache on a schedule, before clients ask for them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Warm {
    /// When to run, in cron syntax or a nickname such as `@daily`, e.g. `30 4 * * *` (daily at
    /// 04:30). A CronJob runs
    /// `nixcache warm` against this cache's Service; a run still going at the next time is not
    /// started twice.
    #[schemars(regex(pattern = SCHEDULE_PATTERN))]
    pub schedule: String,
    /// Time zone of `schedule`, e.g. `Europe/Berlin` (default: the controller manager's, usually UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Store paths (`/nix/store/<hash>-<name>`) whose whole closures are fetched, e.g. the system
    /// toplevels of a nixpkgs bump. A path missing upstream fails the run (the others are still
    /// fetched).
    #[schemars(length(min = 1, max = 1000), inner(regex(pattern = STORE_PATH_PATTERN)))]
    pub paths: Vec<String>,
    /// Fetch the narinfos only, and leave the NARs for the clients that ask (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub narinfos_only: bool,
    /// Requests at once (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub concurrency: Option<i32>,
    /// For a private cache (`spec.private`): a Secret whose key (default `credential`) holds
    /// what the warm-up shows the cache, `user:password` (HTTP Basic) or a token, one that
    /// `spec.private` or `spec.uploads` accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_secret_ref: Option<SecretKeyRef>,
}

/// A private cache: every request but the probes' and `/metrics` needs a credential, sent by Nix
/// from its `netrc-file` (`machine HOST login USER password PASSWORD`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Private {
    /// A Secret whose key (default `credentials`) holds who may read: `user:bcrypt-hash` lines
    /// (htpasswd) or one bearer token per line. Upload credentials read too.
    pub credentials_secret_ref: SecretKeyRef,
}

/// Uploads from authenticated clients.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.allowPut || self.allowDelete")
    .message("uploads needs allowPut or allowDelete; remove uploads to keep the cache read-only")
    .reason(Reason::FieldValueInvalid))]
pub struct Uploads {
    /// Accept `PUT` of narinfos and NARs (`nix copy --to`).
    #[serde(default)]
    pub allow_put: bool,
    /// Accept `DELETE` of narinfos and NARs.
    #[serde(default)]
    pub allow_delete: bool,
    /// A Secret whose key (default `credentials`) holds who may upload: `user:bcrypt-hash`
    /// lines (htpasswd) or one bearer token per line.
    pub credentials_secret_ref: SecretKeyRef,
}

/// The Service in front of the replicas.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// `ClusterIP` (default), `NodePort` or `LoadBalancer`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ServiceType>,
    /// Port the Service listens on (default 8501).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Annotations on the Service, e.g. for a cloud load balancer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// How the Service is exposed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceType {
    // Reachable inside the cluster only.
    ClusterIP,
    // Also on a port of every node.
    NodePort,
    // Also through a cloud load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The value Kubernetes expects in `spec.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// CPU-based autoscaling of the replicas.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas")
    .message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas")
    .field_path(".minReplicas")
    .reason(Reason::FieldValueInvalid))]
pub struct Autoscaling {
    /// Fewest replicas.
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Most replicas.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Average CPU use, in percent of the CPU request, that the autoscaler aims for (default 80).
    #[serde(
        default,
        rename = "targetCPUUtilizationPercentage",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 1000))]
    pub target_cpu_utilization_percentage: Option<i32>,
}

/// A PodDisruptionBudget for the replicas. Set exactly one of the two fields.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.minAvailable) != has(self.maxUnavailable)")
    .message("set exactly one of podDisruptionBudget.minAvailable and podDisruptionBudget.maxUnavailable")
    .reason(Reason::FieldValueInvalid))]
pub struct PodDisruptionBudgetSpec {
    /// Replicas that must stay up during a drain: a number or a percentage such as `50%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
    /// Replicas that may be down during a drain: a number or a percentage such as `25%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}
