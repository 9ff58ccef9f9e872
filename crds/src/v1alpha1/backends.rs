//! Where a NixCache keeps its NARs and its metadata, and references to Secrets.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A key in a Secret in the NixCache's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret (in the NixCache's namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret; each field that takes a Secret says its default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub key: Option<String>,
}

impl SecretKeyRef {
    /// The key, or `default` when none is given.
    pub fn key_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.key.as_deref().unwrap_or(default)
    }
}

/// Where the NARs are kept. Set exactly one of `s3` and `persistentVolumeClaim`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.s3) != has(self.persistentVolumeClaim)")
    .message("set exactly one of storage.s3 and storage.persistentVolumeClaim")
    .reason(Reason::FieldValueInvalid))]
pub struct Storage {
    /// An S3 bucket (AWS, MinIO, Ceph, Garage, …) shared by all replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,
    /// A volume for a single replica: the NARs go to `nar/` on it, and with `database.sqlite`
    /// also the SQLite database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<VolumeStorage>,
}

/// NARs in an S3 bucket. The bucket must exist; the proxy checks it at start.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct S3Storage {
    /// Name of the bucket.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Endpoint URL of an S3-compatible server, e.g. `http://minio.storage:9000` (default: AWS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub endpoint: Option<String>,
    /// Region to sign requests for (default: `us-east-1`, or the AWS configuration's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub region: Option<String>,
    /// Address objects as `ENDPOINT/BUCKET/KEY` instead of `BUCKET.ENDPOINT/KEY`; most
    /// self-hosted servers (MinIO, Garage) need it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub path_style: bool,
    /// Store objects under `PREFIX/nar/…` so several caches can share a bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A Secret with the access key (key `AWS_ACCESS_KEY_ID`) and secret key (key
    /// `AWS_SECRET_ACCESS_KEY`). Unset: the pods use the standard AWS chain (for example EKS IRSA
    /// through `serviceAccountName`). The policy needs s3:ListBucket, s3:GetObject,
    /// s3:PutObject, s3:DeleteObject and s3:AbortMultipartUpload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<S3CredentialsRef>,
    /// A disk cache in each replica of the NARs it served from the bucket (an emptyDir), so a
    /// NAR asked for again is read from the pod's own disk; the least recently used are dropped
    /// beyond `size`. On by default, also when this field is absent. It starts empty whenever a
    /// pod starts (a restart, a rollout, a rescheduling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hot_tier: Option<HotTier>,
    /// Answer a NAR hit (one not in the hot tier) with `307` to a presigned GET URL of its
    /// object, so the bytes go from the bucket to the client, not through a replica. Off by
    /// default. Only for clients that reach the bucket's endpoint themselves: Nix follows the
    /// redirect and sends no netrc credentials to the bucket's host (the URL is the
    /// credential). narinfos, and NARs not yet in the bucket, are still served by the replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<S3Redirect>,
}

/// The hot tier of each replica on S3 (`serve --hot-tier-dir`, `--hot-tier-size`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HotTier {
    /// Keep the hot tier (default true). `false`: every NAR hit is read from the bucket.
    #[serde(default = "default_hot_tier_enabled")]
    pub enabled: bool,
    /// Most bytes of NARs a replica keeps, e.g. `20Gi` (default: half the `ephemeral-storage`
    /// request in `spec.resources`, else `2Gi`). The emptyDir's `sizeLimit` is 25% more, for
    /// filesystem overhead (the kubelet evicts a pod whose emptyDir exceeds it); the node needs
    /// that much free disk, which the scheduler only counts with an `ephemeral-storage` request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
}

impl Default for HotTier {
    fn default() -> Self {
        Self {
            enabled: default_hot_tier_enabled(),
            size: None,
        }
    }
}

fn default_hot_tier_enabled() -> bool {
    true
}

/// Redirects of NAR hits to the bucket (`serve --s3-redirect`, `--s3-redirect-expiry`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct S3Redirect {
    /// Redirect NAR hits to the bucket (default false).
    #[serde(default)]
    pub enabled: bool,
    /// How long a presigned URL stays valid, e.g. `5m`, `1h 30m` (default `5m`; at most 7
    /// days, S3's limit). A client must start its download within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub expiry: Option<String>,
}

/// A duration as `humantime` reads it: numbers each with a unit, e.g. `5m`, `1h 30m`, `90s`.
pub const DURATION_PATTERN: &str = r"^\s*([0-9]+\s*[A-Za-zµ]+\s*)+$";

/// A Secret holding S3 credentials.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct S3CredentialsRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the access key ID (default `AWS_ACCESS_KEY_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_key: Option<String>,
    /// Key holding the secret access key (default `AWS_SECRET_ACCESS_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_key: Option<String>,
}

/// A PersistentVolumeClaim for a single replica: an existing one (`claimName`) or one the
/// operator creates as `<name>-data` (`size`). A created claim is not deleted with the NixCache
/// (delete it yourself once the data is no longer wanted); a NixCache of the same name adopts it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.claimName) != has(self.size)")
    .message("set exactly one of claimName (an existing claim) and size (a claim the operator creates)")
    .reason(Reason::FieldValueInvalid))]
pub struct VolumeStorage {
    /// Use this existing claim in the NixCache's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: Option<String>,
    /// Create a claim `<name>-data` of this size, e.g. `100Gi` (it can grow later where the
    /// storage class allows expansion, never shrink).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// Storage class of the created claim (default: the cluster's default class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// Where the metadata lives. Set exactly one of `urlSecretRef` and `sqlite`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.urlSecretRef) != has(self.sqlite)")
    .message("set exactly one of database.urlSecretRef and database.sqlite")
    .reason(Reason::FieldValueInvalid))]
pub struct Database {
    /// A Secret whose key (default `url`) holds the database URL:
    /// `postgres://USER:PASSWORD@HOST:5432/DB` or `mysql://USER:PASSWORD@HOST:3306/DB`. It reaches
    /// the pods only as an environment variable from the Secret. Before a new image or a changed
    /// URL serves, a Job runs `nixcache migrate` against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyRef>,
    /// SQLite in `db.sqlite` on the `persistentVolumeClaim` (one replica only). The proxy
    /// migrates it itself at start, so no migration Job runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlite: Option<SqliteDatabase>,
}

/// SQLite on the cache's volume; it has no settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct SqliteDatabase {}
