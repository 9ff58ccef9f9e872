//! Checks of the invariants the builders rely on. The CRD's CEL rules reject the same specs at
//! the API server; these catch a NixCache stored before a rule existed (or with validation off).

use nixcache_crds::NixCacheSpec;

use crate::blocker::Blocker;

/// `Err` with a message naming the offending field when the spec cannot be rendered.
pub fn spec(spec: &NixCacheSpec) -> Result<(), Blocker> {
    let invalid = |message: &str| Err(Blocker::new("InvalidSpec", message.to_owned()));
    let storage = &spec.storage;
    if storage.s3.is_some() == storage.persistent_volume_claim.is_some() {
        return invalid("set exactly one of spec.storage.s3 and spec.storage.persistentVolumeClaim");
    }
    let database = &spec.database;
    if database.url_secret_ref.is_some() == database.sqlite.is_some() {
        return invalid("set exactly one of spec.database.urlSecretRef and spec.database.sqlite");
    }
    if let Some(volume) = &storage.persistent_volume_claim {
        if volume.claim_name.is_some() == volume.size.is_some() {
            return invalid("set exactly one of spec.storage.persistentVolumeClaim.claimName and .size");
        }
    }
    let single = spec.replicas <= 1 && spec.autoscaling.is_none();
    if database.sqlite.is_some() && storage.persistent_volume_claim.is_none() {
        return invalid(
            "spec.database.sqlite keeps its file on the volume: set spec.storage.persistentVolumeClaim",
        );
    }
    if storage.persistent_volume_claim.is_some() && !single {
        return invalid("spec.storage.persistentVolumeClaim (and spec.database.sqlite) serve one replica only: set spec.replicas to 0 or 1 and remove spec.autoscaling, or use storage.s3 with database.urlSecretRef");
    }
    if storage.persistent_volume_claim.is_some() && spec.fsck.as_ref().is_some_and(|f| !f.repair) {
        return invalid("spec.fsck.repair: false needs spec.storage.s3 (a CronJob that only reports): on spec.storage.persistentVolumeClaim the replica runs fsck itself and always repairs; remove repair or set it to true");
    }
    if spec.replicas < 0 {
        return invalid("spec.replicas must not be negative");
    }
    if let Some(a) = &spec.autoscaling {
        if a.min_replicas < 1 || a.min_replicas > a.max_replicas {
            return invalid("spec.autoscaling needs 1 <= minReplicas <= maxReplicas");
        }
    }
    if let Some(p) = &spec.pod_disruption_budget {
        if p.min_available.is_some() == p.max_unavailable.is_some() {
            return invalid("set exactly one of spec.podDisruptionBudget.minAvailable and .maxUnavailable");
        }
    }
    Ok(())
}
