//! The CronJob running `nixcache fsck` (S3 storage only; on a volume `serve` runs it itself).

use k8s_openapi::api::batch::v1::CronJob;
use nixcache_crds::NixCache;

use super::storage_cronjob::{storage_cronjob, StorageCommand};
use super::{fsck_cronjob_name, Plan};

/// The fsck CronJob, or `None` when `fsck` is unset or the NARs are on a volume.
///
/// Its Job runs one pod (`backoffLimit: 0`): a run that found something exits non-zero (2 when
/// it repaired everything, 3 when problems remain), and running the whole check again at once
/// would only report the same; the next schedule checks again.
pub fn fsck_cronjob(nc: &NixCache, plan: &Plan) -> Option<CronJob> {
    let fsck = nc.spec.fsck.as_ref()?;
    // With a volume, `serve` runs fsck itself (see deployment::serve_args).
    nc.spec.storage.s3.as_ref()?;
    let mut args = vec!["fsck".to_owned()];
    if fsck.repair {
        args.push("--repair".into());
    }
    if fsck.verify {
        args.push("--verify".into());
    }
    let command = StorageCommand {
        component: "fsck",
        name: fsck_cronjob_name(nc),
        args,
        schedule: fsck.schedule.clone(),
        time_zone: fsck.time_zone.clone(),
        backoff_limit: 0,
    };
    Some(storage_cronjob(nc, plan, command))
}

#[cfg(test)]
mod tests;
