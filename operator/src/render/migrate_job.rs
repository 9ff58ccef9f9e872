//! The Job running `nixcache migrate` before a new image or database serves.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use nixcache_crds::NixCache;

use super::{labels, owned_meta, pod, Plan, IMAGE_ANNOTATION};

/// The migration Job for `plan`'s image and database, or `None` for SQLite (which `serve`
/// migrates itself).
pub fn migrate_job(nc: &NixCache, plan: &Plan) -> Option<Job> {
    let name = plan.migrate_job_name(nc)?;
    let mut container = pod::container(nc, plan, "migrate", vec!["migrate".into()]);
    container.env = Some(pod::env(nc, false));
    container.volume_mounts = Some(vec![k8s_openapi::api::core::v1::VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    }]);
    let volumes = pod::data_volumes(nc)
        .into_iter()
        .filter(|v| v.name == "tmp")
        .collect();
    let mut spec = pod::pod_spec(nc, vec![container], volumes);
    spec.restart_policy = Some("Never".into());
    let mut metadata = owned_meta(nc, name, "migrate");
    metadata.annotations = Some(BTreeMap::from([(
        IMAGE_ANNOTATION.to_owned(),
        plan.image.clone(),
    )]));
    Some(Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(3),
            // A database that never answers fails the Job (and shows as Degraded) within 15 min.
            active_deadline_seconds: Some(900),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(nc, "migrate")),
                    ..ObjectMeta::default()
                }),
                spec: Some(spec),
            },
            ..JobSpec::default()
        }),
        status: None,
    })
}
