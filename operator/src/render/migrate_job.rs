//! The Job running `nixcache migrate` before a new image or database serves.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use nixcache_crds::NixCache;

use super::{labels, owned_meta, pod, short_hash, Plan, IMAGE_ANNOTATION, TEMPLATE_HASH_ANNOTATION};

/// The migration Job for `plan`'s image and database, or `None` for SQLite (which `serve`
/// migrates itself). Its name says which migration it is (image and database); its
/// `nixcache.dev/template-hash` annotation says how its pods were rendered.
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
    let job_spec = JobSpec {
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
    };
    let mut metadata = owned_meta(nc, name, "migrate");
    metadata.annotations = Some(BTreeMap::from([
        (IMAGE_ANNOTATION.to_owned(), plan.image.clone()),
        (TEMPLATE_HASH_ANNOTATION.to_owned(), spec_hash(&job_spec)),
    ]));
    Some(Job {
        metadata,
        spec: Some(job_spec),
        status: None,
    })
}

/// Digest of the rendered Job spec (its JSON: maps are ordered, so it is stable).
fn spec_hash(spec: &JobSpec) -> String {
    // Serialising plain Kubernetes structs cannot fail (string keys only).
    let json = serde_json::to_vec(spec).unwrap_or_default();
    short_hash(&[&json])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn plan() -> Plan {
        let nc = fixtures::scaled("demo");
        let config = crate::Config::new("registry.test/nixcache:1.0");
        Plan::new(&nc, &config, "secrets".into(), Some("db".into()))
    }

    fn template_hash(job: &Job) -> String {
        job.metadata.annotations.as_ref().unwrap()[TEMPLATE_HASH_ANNOTATION].clone()
    }

    #[test]
    fn a_toleration_changes_the_template_hash_but_not_the_name() {
        let nc = fixtures::scaled("demo");
        let before = migrate_job(&nc, &plan()).unwrap();
        let mut tolerated = nc.clone();
        tolerated.spec.tolerations = vec![k8s_openapi::api::core::v1::Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }];
        let after = migrate_job(&tolerated, &plan()).unwrap();
        assert_eq!(before.metadata.name, after.metadata.name);
        assert_ne!(template_hash(&before), template_hash(&after));
        assert_eq!(
            template_hash(&before),
            template_hash(&migrate_job(&nc, &plan()).unwrap())
        );
        assert_eq!(template_hash(&before).len(), 10);
    }
}
