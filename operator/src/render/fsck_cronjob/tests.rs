//! The fsck CronJob as rendered (S3), and fsck inside the replicas (a volume, or a cluster without
//! CronJobs): command lines, schedule, run limits, ownership, and what it shares with GC.

use k8s_openapi::api::batch::v1::JobSpec;
use k8s_openapi::api::core::v1::PodSpec;

use super::*;
use crate::capabilities::{Capabilities, OptionalApi};
use crate::fixtures::{self, NixCacheExt};
use crate::render::deployment::serve_args;
use crate::render::gc_cronjob;

const SCHEDULE: &str = "0 5 * * 0";

fn plan(nc: &NixCache) -> Plan {
    let config = crate::Config::new("registry.test/nixcache:1.0");
    Plan::new(nc, &config, "secrets".into(), Some("db".into()))
}

fn render(nc: &NixCache) -> CronJob {
    fsck_cronjob(nc, &plan(nc)).expect("an fsck CronJob")
}

fn job_spec(cron: &CronJob) -> &JobSpec {
    cron.spec.as_ref().unwrap().job_template.spec.as_ref().unwrap()
}

fn pod_spec(cron: &CronJob) -> &PodSpec {
    job_spec(cron).template.spec.as_ref().unwrap()
}

fn args(cron: &CronJob) -> Vec<String> {
    pod_spec(cron).containers[0].args.clone().unwrap()
}

/// The storage flags of `fixtures::scaled`, after `--data-dir`.
const S3_ARGS: [&str; 8] = [
    "--data-dir",
    "/var/lib/nixcache",
    "--storage",
    "s3",
    "--s3-bucket",
    "nix-cache",
    "--s3-region",
    "eu-central-1",
];

/// The `--fsck-*` flags of `serve` (with the schedule).
fn serve_fsck_args(nc: &NixCache, plan: &Plan) -> Vec<String> {
    let args = serve_args(nc, plan);
    let Some(at) = args.iter().position(|a| a == "--fsck-schedule") else {
        return args.into_iter().filter(|a| a.contains("fsck")).collect();
    };
    let mut found = args[at..at + 2].to_vec();
    found.extend(args.iter().filter(|a| *a == "--fsck-verify").cloned());
    found
}

#[test]
fn no_fsck_section_no_cronjob_and_no_flags() {
    let nc = fixtures::scaled("demo");
    assert_eq!(fsck_cronjob(&nc, &plan(&nc)), None);
    assert!(!serve_args(&nc, &plan(&nc)).iter().any(|a| a.contains("fsck")));
    let single = fixtures::single("one");
    assert!(!serve_args(&single, &plan(&single))
        .iter()
        .any(|a| a.contains("fsck")));
}

#[test]
fn it_repairs_by_default_and_verifies_when_asked() {
    let mut nc = fixtures::scaled("demo").with_fsck(SCHEDULE);
    let expected = |head: &[&str]| -> Vec<String> {
        head.iter()
            .chain(S3_ARGS.iter())
            .map(|a| (*a).to_owned())
            .collect()
    };
    assert_eq!(args(&render(&nc)), expected(&["fsck", "--repair"]));
    nc.spec.fsck.as_mut().unwrap().verify = true;
    assert_eq!(args(&render(&nc)), expected(&["fsck", "--repair", "--verify"]));
    nc.spec.fsck.as_mut().unwrap().repair = false;
    assert_eq!(args(&render(&nc)), expected(&["fsck", "--verify"]));
    // The CronJob does it all: `serve` gets no fsck flags.
    assert_eq!(serve_fsck_args(&nc, &plan(&nc)), Vec::<String>::new());
}

#[test]
fn schedule_time_zone_and_run_limits() {
    let mut nc = fixtures::scaled("demo").with_fsck(SCHEDULE);
    nc.spec.fsck.as_mut().unwrap().time_zone = Some("Europe/Berlin".into());
    let cron = render(&nc);
    let spec = cron.spec.as_ref().unwrap();
    assert_eq!(spec.schedule, SCHEDULE);
    assert_eq!(spec.time_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    assert_eq!(spec.starting_deadline_seconds, Some(3600));
    assert_eq!(spec.successful_jobs_history_limit, Some(1));
    assert_eq!(spec.failed_jobs_history_limit, Some(3));
    assert_eq!(
        job_spec(&cron).backoff_limit,
        Some(0),
        "a run that found something is not run again at once"
    );
    assert_eq!(pod_spec(&cron).restart_policy.as_deref(), Some("Never"));
}

#[test]
fn it_is_named_labelled_and_owned_like_the_other_children() {
    let nc = fixtures::scaled("demo").with_fsck(SCHEDULE);
    let cron = render(&nc);
    assert_eq!(cron.metadata.name.as_deref(), Some("demo-fsck"));
    assert_eq!(fsck_cronjob_name(&nc), "demo-fsck");
    assert_eq!(cron.metadata.namespace.as_deref(), Some("default"));
    let owner = &cron.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("NixCache", "demo", "uid-demo")
    );
    assert_eq!(owner.controller, Some(true));
    let component = |labels: &Option<std::collections::BTreeMap<String, String>>| {
        labels.as_ref().unwrap()["app.kubernetes.io/component"].clone()
    };
    assert_eq!(component(&cron.metadata.labels), "fsck");
    assert_eq!(
        component(&job_spec(&cron).template.metadata.as_ref().unwrap().labels),
        "fsck"
    );
    let job_labels = &cron
        .spec
        .as_ref()
        .unwrap()
        .job_template
        .metadata
        .as_ref()
        .unwrap()
        .labels;
    assert_eq!(component(job_labels), "fsck", "not selected by the Service");
}

#[test]
fn it_runs_in_the_gc_jobs_pod_with_the_same_storage_and_database() {
    let mut nc = fixtures::scaled("demo").with_fsck(SCHEDULE);
    nc.spec.service_account_name = Some("irsa".into());
    let plan = plan(&nc);
    let fsck = render(&nc);
    let gc = gc_cronjob(&nc, &plan).unwrap();
    let mut fsck_pod = pod_spec(&fsck).clone();
    let mut gc_pod = pod_spec(&gc).clone();
    let (fsck_container, gc_container) = (&mut fsck_pod.containers[0], &mut gc_pod.containers[0]);
    assert_eq!(fsck_container.name, "fsck");
    assert_eq!(gc_container.name, "gc");
    assert_eq!(
        gc_container.args.as_ref().unwrap()[..3],
        ["gc", "--max-size", "500G"],
        "GC keeps its own command"
    );
    let storage = |args: &[String]| args[args.len() - S3_ARGS.len()..].to_vec();
    assert_eq!(
        storage(fsck_container.args.as_ref().unwrap()),
        storage(gc_container.args.as_ref().unwrap())
    );
    // Everything else is the same pod: image, env (database URL, S3 keys), volumes, identity.
    for container in [&mut *fsck_container, &mut *gc_container] {
        container.name.clear();
        container.args = None;
    }
    assert_eq!(fsck_pod, gc_pod);
    assert_eq!(fsck_pod.service_account_name.as_deref(), Some("irsa"));
    let json = serde_json::to_string(&fsck).unwrap();
    assert!(json.contains("NIXCACHE_DATABASE_URL") && json.contains("AWS_SECRET_ACCESS_KEY"));
    assert_eq!(job_spec(&gc).backoff_limit, Some(1), "GC may retry once");
}

#[test]
fn on_a_volume_the_replica_runs_fsck_itself() {
    let mut nc = fixtures::single("one").with_fsck(SCHEDULE);
    let plan = plan(&nc);
    assert_eq!(fsck_cronjob(&nc, &plan), None);
    assert!(plan.fsck_in_replicas(&nc));
    assert_eq!(serve_fsck_args(&nc, &plan), ["--fsck-schedule", SCHEDULE]);
    nc.spec.fsck.as_mut().unwrap().verify = true;
    assert_eq!(
        serve_fsck_args(&nc, &plan),
        ["--fsck-schedule", SCHEDULE, "--fsck-verify"]
    );
    // Report-only cannot run in the replica (the spec is refused before rendering).
    nc.spec.fsck.as_mut().unwrap().repair = false;
    assert!(!plan.fsck_in_replicas(&nc));
    assert_eq!(serve_fsck_args(&nc, &plan), Vec::<String>::new());
}

#[test]
fn without_cronjobs_a_repairing_fsck_moves_into_the_replicas() {
    let mut nc = fixtures::scaled("demo").with_fsck(SCHEDULE);
    nc.spec.fsck.as_mut().unwrap().verify = true;
    let plan = plan(&nc).with_capabilities(Capabilities::without([OptionalApi::CronJob]));
    assert!(plan.fsck_in_replicas(&nc));
    assert_eq!(
        serve_fsck_args(&nc, &plan),
        ["--fsck-schedule", SCHEDULE, "--fsck-verify"]
    );
    // GC moves too, its flags first.
    let args = serve_args(&nc, &plan);
    let at = |flag: &str| args.iter().position(|a| a == flag).unwrap();
    assert!(at("--gc-schedule") < at("--fsck-schedule"), "{args:?}");
    // Report-only: not run at all (the FeaturesAvailable condition says so).
    nc.spec.fsck.as_mut().unwrap().repair = false;
    assert!(!plan.fsck_in_replicas(&nc));
    assert_eq!(serve_fsck_args(&nc, &plan), Vec::<String>::new());
}
