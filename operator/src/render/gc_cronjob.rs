//! The CronJob running `nixcache gc` (S3 storage only; on a volume `serve` runs GC itself).

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use nixcache_crds::NixCache;

use super::deployment::DEFAULT_GC_SCHEDULE;
use super::{gc_cronjob_name, labels, owned_meta, pod, Plan, DATA_DIR};

/// The GC CronJob, or `None` when `gc` is unset or the NARs are on a volume.
pub fn gc_cronjob(nc: &NixCache, plan: &Plan) -> Option<CronJob> {
    let gc = nc.spec.gc.as_ref()?;
    // With a volume, `serve` collects garbage itself (see deployment::serve_args).
    nc.spec.storage.s3.as_ref()?;
    let mut args = vec![
        "gc".into(),
        "--max-size".into(),
        gc.max_size.clone(),
        "--data-dir".into(),
        DATA_DIR.into(),
    ];
    args.extend(pod::storage_args(nc));
    let mut container = pod::container(nc, plan, "gc", args);
    container.env = Some(pod::env(nc, true));
    container.volume_mounts = Some(pod::data_mounts());
    let mut spec = pod::pod_spec(nc, vec![container], pod::data_volumes(nc));
    spec.restart_policy = Some("Never".into());
    Some(CronJob {
        metadata: owned_meta(nc, gc_cronjob_name(nc), "gc"),
        spec: Some(CronJobSpec {
            schedule: gc.schedule.clone().unwrap_or_else(|| DEFAULT_GC_SCHEDULE.into()),
            time_zone: gc.time_zone.clone(),
            concurrency_policy: Some("Forbid".into()),
            starting_deadline_seconds: Some(3600),
            successful_jobs_history_limit: Some(1),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(nc, "gc")),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(1),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(labels(nc, "gc")),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(spec),
                    },
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        }),
        status: None,
    })
}
