//! The CronJobs running a `nixcache` command on the cache's own storage and database (`gc`,
//! `fsck`; S3 storage only, as a second pod could not mount a volume on another node): the
//! replicas' image, placement, env and data volumes, one run at a time.

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use nixcache_crds::NixCache;

use super::{labels, owned_meta, pod, Plan, DATA_DIR};

/// What differs between the storage CronJobs.
pub(super) struct StorageCommand {
    /// The component label, also the container's name (`gc`, `fsck`).
    pub component: &'static str,
    /// The CronJob's name.
    pub name: String,
    /// The subcommand and its own flags; `--data-dir` and the storage flags follow.
    pub args: Vec<String>,
    /// `spec.schedule` of the CronJob.
    pub schedule: String,
    /// `spec.timeZone` of the CronJob.
    pub time_zone: Option<String>,
    /// Pods a failed run may retry with before the next schedule.
    pub backoff_limit: i32,
}

/// The CronJob running `command` with the storage flags and env of `serve`.
pub(super) fn storage_cronjob(nc: &NixCache, plan: &Plan, command: StorageCommand) -> CronJob {
    let component = command.component;
    let mut args = command.args;
    args.extend(["--data-dir".into(), DATA_DIR.into()]);
    args.extend(pod::storage_args(nc));
    let mut container = pod::container(nc, plan, component, args);
    container.env = Some(pod::env(nc, true));
    container.volume_mounts = Some(pod::data_mounts());
    let mut spec = pod::pod_spec(nc, vec![container], pod::data_volumes(nc));
    spec.restart_policy = Some("Never".into());
    let metadata = || ObjectMeta {
        labels: Some(labels(nc, component)),
        ..ObjectMeta::default()
    };
    CronJob {
        metadata: owned_meta(nc, command.name, component),
        spec: Some(CronJobSpec {
            schedule: command.schedule,
            time_zone: command.time_zone,
            concurrency_policy: Some("Forbid".into()),
            starting_deadline_seconds: Some(3600),
            successful_jobs_history_limit: Some(1),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(metadata()),
                spec: Some(JobSpec {
                    backoff_limit: Some(command.backoff_limit),
                    template: PodTemplateSpec {
                        metadata: Some(metadata()),
                        spec: Some(spec),
                    },
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        }),
        status: None,
    }
}
