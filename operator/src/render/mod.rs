//! Pure builders: every child object of a NixCache, from the NixCache and a [`Plan`].
//!
//! Nothing here talks to the API server, so every builder is unit-tested and every rendered
//! manifest is checked with `kubernetes-validate --strict` (see `tests/kubernetes_validate.rs`).

mod autoscaling;
mod deployment;
mod fsck_cronjob;
mod gc_cronjob;
mod migrate_job;
mod pod;
mod s3_serve;
#[cfg(test)]
mod s3_serve_tests;
mod secrets;
mod service;
mod storage_cronjob;
mod warm_cronjob;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use nixcache_crds::{NixCache, SecretKeyRef};
use sha2::{Digest, Sha256};

pub use autoscaling::{horizontal_pod_autoscaler, pod_disruption_budget};
pub use deployment::deployment;
pub use fsck_cronjob::fsck_cronjob;
pub use gc_cronjob::gc_cronjob;
pub use migrate_job::migrate_job;
pub use pod::{CONTAINER_PORT, DATA_DIR};
pub use s3_serve::{
    check as check_s3_serving, hot_tier_bytes, InvalidS3Serving, DEFAULT_HOT_TIER_BYTES,
    DEFAULT_REDIRECT_EXPIRY, HOT_TIER_DIR, HOT_TIER_VOLUME,
};
pub use secrets::{
    default_key_name, persistent_volume_claim, signing_key_deleted_with_cache, signing_secret,
    PUBLIC_KEY_ENTRY, SECRET_KEY_ENTRY,
};
pub use service::service;
pub use warm_cronjob::{
    warm_cronjob, InvalidWarm, WARM_BACKOFF_LIMIT, WARM_CREDENTIAL_KEY, WARM_DEADLINE_SECONDS,
};

use crate::capabilities::{Capabilities, OptionalApi};
use crate::config::Config;

/// Field manager of every server-side apply.
pub const MANAGER: &str = "nixcache-operator";
/// Pod template annotation: hash of the Secret data the pods use, so a changed Secret rolls them.
pub const SECRETS_HASH_ANNOTATION: &str = "nixcache.dev/secrets-hash";
/// Annotation naming the proxy image a migration Job was made for.
pub const IMAGE_ANNOTATION: &str = "nixcache.dev/image";
/// Annotation on a migration Job: digest of its (immutable) spec as rendered, so a changed pod
/// template is seen without comparing against the fields the API server defaulted.
pub const TEMPLATE_HASH_ANNOTATION: &str = "nixcache.dev/template-hash";
/// Label value of `app.kubernetes.io/managed-by` on every child.
pub const MANAGED_BY: &str = "nixcache-operator";

/// Values the builders need that do not come from the NixCache alone: the image to run and
/// digests of the Secrets it references (read by the reconciler).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The proxy image (spec.image or the operator's default).
    pub image: String,
    /// Digest of the Secret data mounted or referenced by the pods.
    pub secrets_hash: String,
    /// Digest of the database URL (external databases only).
    pub database_hash: Option<String>,
    /// The Secret and key holding the signing key.
    pub signing_secret: SecretKeyRef,
    /// The optional APIs the cluster serves (all unless set with [`Plan::with_capabilities`]).
    pub capabilities: Capabilities,
}

impl Plan {
    /// A plan for `nc` with the given Secret digests.
    pub fn new(nc: &NixCache, config: &Config, secrets_hash: String, database_hash: Option<String>) -> Self {
        Self {
            image: nc
                .spec
                .image
                .clone()
                .unwrap_or_else(|| config.default_image.clone()),
            secrets_hash,
            database_hash,
            signing_secret: signing_secret_ref(nc),
            capabilities: Capabilities::default(),
        }
    }

    /// The plan for a cluster serving `capabilities`.
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// A HorizontalPodAutoscaler owns the replica count: `spec.autoscaling` on a cluster that
    /// serves `autoscaling/v2`.
    pub fn autoscaled(&self, nc: &NixCache) -> bool {
        nc.spec.autoscaling.is_some() && self.capabilities.serves(OptionalApi::HorizontalPodAutoscaler)
    }

    /// `spec.gc` runs inside the replicas (`serve --gc-schedule`) rather than as a CronJob: on a
    /// volume (no second pod can mount it), or when the cluster serves no `batch/v1` CronJob.
    pub fn gc_in_replicas(&self, nc: &NixCache) -> bool {
        nc.spec.gc.is_some()
            && (nc.spec.storage.persistent_volume_claim.is_some()
                || !self.capabilities.serves(OptionalApi::CronJob))
    }

    /// `spec.fsck` runs inside the replicas (`serve --fsck-schedule`, which always repairs) rather
    /// than as a CronJob: on a volume, or when the cluster serves no `batch/v1` CronJob. Never a
    /// check with `repair: false` (refused on a volume; without CronJobs it is not applied).
    pub fn fsck_in_replicas(&self, nc: &NixCache) -> bool {
        nc.spec.fsck.as_ref().is_some_and(|f| f.repair)
            && (nc.spec.storage.persistent_volume_claim.is_some()
                || !self.capabilities.serves(OptionalApi::CronJob))
    }

    /// Name of the migration Job for this image and database, or `None` for SQLite.
    pub fn migrate_job_name(&self, nc: &NixCache) -> Option<String> {
        let database = self.database_hash.as_deref()?;
        let hash = short_hash(&[self.image.as_bytes(), b"\n", database.as_bytes()]);
        Some(format!("{}-migrate-{hash}", nc.name_any()))
    }
}

/// The Secret (and key) holding the signing key: `spec.signing.secretRef`, or the generated one.
pub fn signing_secret_ref(nc: &NixCache) -> SecretKeyRef {
    match nc.spec.signing.as_ref().and_then(|s| s.secret_ref.as_ref()) {
        Some(r) => SecretKeyRef {
            name: r.name.clone(),
            key: Some(r.key_or(SECRET_KEY_ENTRY).to_owned()),
        },
        None => SecretKeyRef {
            name: generated_signing_secret_name(nc),
            key: Some(SECRET_KEY_ENTRY.to_owned()),
        },
    }
}

/// Name of the Secret the operator generates the signing key into.
pub fn generated_signing_secret_name(nc: &NixCache) -> String {
    format!("{}-signing-key", nc.name_any())
}

/// Name of the PersistentVolumeClaim the operator creates for `storage.persistentVolumeClaim.size`.
pub fn data_claim_name(nc: &NixCache) -> String {
    format!("{}-data", nc.name_any())
}

/// Name of the GC CronJob.
pub fn gc_cronjob_name(nc: &NixCache) -> String {
    format!("{}-gc", nc.name_any())
}

/// Name of the fsck CronJob.
pub fn fsck_cronjob_name(nc: &NixCache) -> String {
    format!("{}-fsck", nc.name_any())
}

/// Name of the warm-up CronJob.
pub fn warm_cronjob_name(nc: &NixCache) -> String {
    format!("{}-warm", nc.name_any())
}

/// Labels selecting the replicas' pods.
pub fn selector_labels(nc: &NixCache) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "nixcache".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), nc.name_any()),
        ("app.kubernetes.io/component".to_owned(), "proxy".to_owned()),
    ])
}

/// `status.selector`: the selector labels as a label-selector string.
pub fn selector_string(nc: &NixCache) -> String {
    selector_labels(nc)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Labels of a child of `component` (`proxy`, `migrate`, `gc`, `fsck`, `warm`, `signing-key`,
/// `data`).
pub fn labels(nc: &NixCache, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "nixcache".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), nc.name_any()),
        ("app.kubernetes.io/component".to_owned(), component.to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), MANAGED_BY.to_owned()),
    ])
}

/// Labels selecting the migration Jobs of `nc` (every image and database).
pub fn migrate_job_selector(nc: &NixCache) -> String {
    format!(
        "app.kubernetes.io/component=migrate,app.kubernetes.io/instance={}",
        nc.name_any()
    )
}

/// Metadata of a child named `name`, labelled for `component` and owned by the NixCache (so it
/// is watched, and deleted with it).
pub fn owned_meta(nc: &NixCache, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: nc.namespace(),
        labels: Some(labels(nc, component)),
        owner_references: nc.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// The first 10 hex digits of the SHA-256 of the parts.
pub fn short_hash(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

/// The in-cluster URL of the cache's Service.
pub fn service_url(nc: &NixCache) -> String {
    let port = nc
        .spec
        .service
        .as_ref()
        .and_then(|s| s.port)
        .unwrap_or(CONTAINER_PORT);
    let namespace = nc.namespace().unwrap_or_default();
    format!("http://{}.{namespace}.svc:{port}", nc.name_any())
}
