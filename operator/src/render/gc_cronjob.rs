//! The CronJob running `nixcache gc` (S3 storage only; on a volume `serve` runs GC itself).

use k8s_openapi::api::batch::v1::CronJob;
use nixcache_crds::NixCache;

use super::deployment::DEFAULT_GC_SCHEDULE;
use super::storage_cronjob::{storage_cronjob, StorageCommand};
use super::{gc_cronjob_name, Plan};

/// The GC CronJob, or `None` when `gc` is unset or the NARs are on a volume.
pub fn gc_cronjob(nc: &NixCache, plan: &Plan) -> Option<CronJob> {
    let gc = nc.spec.gc.as_ref()?;
    // With a volume, `serve` collects garbage itself (see deployment::serve_args).
    nc.spec.storage.s3.as_ref()?;
    let mut args = vec!["gc".into(), "--max-size".into(), gc.max_size.clone()];
    if gc.keep_uploads {
        args.push("--gc-keep-uploads".into());
    }
    // No pin flags: `gc` reads the pins the replicas declared in the database.
    let command = StorageCommand {
        component: "gc",
        name: gc_cronjob_name(nc),
        args,
        schedule: gc.schedule.clone().unwrap_or_else(|| DEFAULT_GC_SCHEDULE.into()),
        time_zone: gc.time_zone.clone(),
        backoff_limit: 1,
    };
    Some(storage_cronjob(nc, plan, command))
}

#[cfg(test)]
mod tests;
