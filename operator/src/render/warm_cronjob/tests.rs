//! The warm-up CronJob as rendered: command line, schedule, ownership, no secrets, bad specs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::LocalObjectReference;
use nixcache_crds::ServiceSpec;
use nixcache_protocol::StorePathError;

use super::*;
use crate::fixtures::{self, NixCacheExt, HELLO};
use crate::render::gc_cronjob;

const OTHER: &str = "/nix/store/0c0wf1qw0hh0gmgxbbd1k7ligmakdfrn-glibc-2.40-66";

fn plan(nc: &NixCache) -> Plan {
    let config = crate::Config::new("registry.test/nixcache:1.0");
    Plan::new(nc, &config, "secrets".into(), Some("db".into()))
}

fn render(nc: &NixCache) -> CronJob {
    warm_cronjob(nc, &plan(nc)).unwrap().expect("a warm-up CronJob")
}

fn job_spec(cron: &CronJob) -> &JobSpec {
    cron.spec.as_ref().unwrap().job_template.spec.as_ref().unwrap()
}

fn pod_spec(cron: &CronJob) -> &k8s_openapi::api::core::v1::PodSpec {
    job_spec(cron).template.spec.as_ref().unwrap()
}

fn args(cron: &CronJob) -> Vec<String> {
    pod_spec(cron).containers[0].args.clone().unwrap()
}

#[test]
fn no_warm_section_no_cronjob() {
    let nc = fixtures::scaled("demo");
    assert_eq!(warm_cronjob(&nc, &plan(&nc)), Ok(None));
    let single = fixtures::single("one");
    assert_eq!(warm_cronjob(&single, &plan(&single)), Ok(None));
}

#[test]
fn it_warms_the_paths_through_the_caches_own_service() {
    let nc = fixtures::scaled("demo").with_warm("30 4 * * *", &[HELLO, OTHER]);
    let cron = render(&nc);
    assert_eq!(
        args(&cron),
        ["warm", "--url", "http://demo.default.svc:8501", HELLO, OTHER]
    );
    // The Service's own port, also on a volume (warm never touches the storage).
    let mut nc = fixtures::single("one").with_warm("30 4 * * *", &[HELLO]);
    nc.spec.service = Some(ServiceSpec {
        port: Some(80),
        ..ServiceSpec::default()
    });
    nc.spec.warm.as_mut().unwrap().concurrency = Some(16);
    nc.spec.warm.as_mut().unwrap().narinfos_only = true;
    assert_eq!(
        args(&render(&nc)),
        [
            "warm",
            "--url",
            "http://one.default.svc:80",
            "--concurrency",
            "16",
            "--narinfos-only",
            HELLO
        ]
    );
    assert_eq!(
        crate::render::service(&nc).spec.unwrap().ports.unwrap()[0].port,
        80
    );
}

#[test]
fn schedule_time_zone_and_run_limits() {
    let mut nc = fixtures::scaled("demo").with_warm("30 4 * * 1", &[HELLO]);
    nc.spec.warm.as_mut().unwrap().time_zone = Some("Europe/Berlin".into());
    let cron = render(&nc);
    let spec = cron.spec.as_ref().unwrap();
    assert_eq!(spec.schedule, "30 4 * * 1");
    assert_eq!(spec.time_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    let job = job_spec(&cron);
    assert_eq!(
        job.backoff_limit,
        Some(0),
        "one pod per run: the next schedule retries"
    );
    assert_eq!(job.active_deadline_seconds, Some(WARM_DEADLINE_SECONDS));
    assert_eq!(pod_spec(&cron).restart_policy.as_deref(), Some("Never"));
}

#[test]
fn it_is_named_labelled_and_owned_like_the_other_children() {
    let nc = fixtures::scaled("demo").with_warm("30 4 * * *", &[HELLO]);
    let cron = render(&nc);
    assert_eq!(cron.metadata.name.as_deref(), Some("demo-warm"));
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
    assert_eq!(component(&cron.metadata.labels), "warm");
    let template = job_spec(&cron).template.metadata.as_ref().unwrap();
    assert_eq!(component(&template.labels), "warm", "not selected by the Service");
}

#[test]
fn it_runs_like_the_gc_job_but_without_any_secret_or_identity() {
    let mut nc = fixtures::scaled("demo").with_warm("30 4 * * *", &[HELLO]);
    nc.spec.image_pull_policy = Some(nixcache_crds::ImagePullPolicy::Always);
    nc.spec.service_account_name = Some("irsa".into());
    nc.spec.image_pull_secrets = vec![LocalObjectReference {
        name: "registry".into(),
    }];
    let plan = plan(&nc);
    let cron = render(&nc);
    let gc = gc_cronjob(&nc, &plan).unwrap();
    let gc_pod = gc.spec.unwrap().job_template.spec.unwrap().template.spec.unwrap();
    let pod = pod_spec(&cron);
    let (warm, gc_container) = (&pod.containers[0], &gc_pod.containers[0]);
    assert_eq!(warm.name, "warm");
    assert_eq!(warm.image, gc_container.image);
    assert_eq!(warm.image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(warm.security_context, gc_container.security_context);
    assert_eq!(pod.security_context, gc_pod.security_context);
    assert_eq!(pod.image_pull_secrets, gc_pod.image_pull_secrets);
    // The GC job writes to S3 as the cache's (IRSA) account; warm-up must not get that identity.
    assert_eq!(gc_pod.service_account_name.as_deref(), Some("irsa"));
    assert_eq!(pod.service_account_name, None);
    assert_eq!(pod.service_account, None);
    // No database URL, no S3 credentials, no volumes, no API token.
    assert!(warm.env.iter().flatten().all(|e| e.value_from.is_none()));
    assert!(warm.volume_mounts.is_none() && pod.volumes.is_none());
    assert_eq!(pod.automount_service_account_token, Some(false));
    let json = serde_json::to_string(&cron).unwrap();
    for secret in ["secretKeyRef", "\"pg\"", "\"s3\"", "--storage", "signing", "irsa"] {
        assert!(!json.contains(secret), "{secret} in {json}");
    }
}

#[test]
fn small_fixed_resources_whatever_the_replicas_get() {
    let mut nc = fixtures::scaled("demo").with_warm("30 4 * * *", &[HELLO]);
    let big = |value: &str| BTreeMap::from([("cpu".to_owned(), Quantity(value.to_owned()))]);
    nc.spec.resources = Some(ResourceRequirements {
        requests: Some(big("4")),
        limits: Some(big("8")),
        ..ResourceRequirements::default()
    });
    let resources = pod_spec(&render(&nc)).containers[0].resources.clone().unwrap();
    let quantities = |list: Option<BTreeMap<String, Quantity>>| {
        let list = list.unwrap_or_default();
        list.into_iter().map(|(k, v)| (k, v.0)).collect::<Vec<_>>()
    };
    assert_eq!(
        quantities(resources.requests),
        [
            ("cpu".to_owned(), "10m".to_owned()),
            ("memory".to_owned(), "32Mi".to_owned())
        ]
    );
    assert_eq!(
        quantities(resources.limits),
        [("memory".to_owned(), "256Mi".to_owned())],
        "no CPU limit: throttling would only slow the walk down"
    );
}

#[test]
fn a_bad_warm_spec_is_an_error_naming_the_entry() {
    let bad = "/nix/store/not-a-hash-hello";
    let nc = fixtures::scaled("demo").with_warm("30 4 * * *", &[HELLO, bad]);
    let error = warm_cronjob(&nc, &plan(&nc)).unwrap_err();
    let hash_length = |e: &StorePathError| matches!(e, StorePathError::HashLength { .. });
    assert!(
        matches!(&error, InvalidWarm::Path { index: 1, path, source } if path == bad && hash_length(source)),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with("spec.warm.paths[1] \"/nix/store/not-a-hash-hello\" is not a store path:")
            && message.contains("/nix/store/<32-character nixbase32 hash>-<name>"),
        "{message}"
    );
    // A name Nix reserves passes the schema's pattern but not the operator.
    let reserved = "/nix/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4-.-x";
    let nc = fixtures::scaled("demo").with_warm("30 4 * * *", &[reserved]);
    assert!(matches!(
        warm_cronjob(&nc, &plan(&nc)),
        Err(InvalidWarm::Path {
            index: 0,
            source: StorePathError::NameReserved { .. },
            ..
        })
    ));
    let outside = "/gnu/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4-hello";
    let nc = fixtures::scaled("demo").with_warm("30 4 * * *", &[outside]);
    assert!(warm_cronjob(&nc, &plan(&nc)).is_err());

    let nc = fixtures::scaled("demo").with_warm("30 4 * * *", &[]);
    assert_eq!(warm_cronjob(&nc, &plan(&nc)), Err(InvalidWarm::NoPaths));
    let mut nc = fixtures::scaled("demo").with_warm("30 4 * * *", &[HELLO]);
    nc.spec.warm.as_mut().unwrap().concurrency = Some(0);
    assert_eq!(warm_cronjob(&nc, &plan(&nc)), Err(InvalidWarm::Concurrency(0)));
}

#[test]
fn a_private_caches_warm_up_shows_its_credential() {
    let mut nc = fixtures::scaled("demo").with_warm("30 4 * * *", &[HELLO]);
    nc.spec.private = Some(nixcache_crds::Private {
        credentials_secret_ref: nixcache_crds::SecretKeyRef {
            name: "readers".into(),
            key: None,
        },
    });
    assert_eq!(warm_cronjob(&nc, &plan(&nc)), Err(InvalidWarm::NoCredential));
    nc.spec.warm.as_mut().unwrap().credential_secret_ref = Some(nixcache_crds::SecretKeyRef {
        name: "warm-token".into(),
        key: Some("token".into()),
    });
    let cron = render(&nc);
    let url = "http://demo.default.svc:8501";
    assert_eq!(
        args(&cron),
        [
            "warm",
            "--url",
            url,
            "--auth-file",
            "/etc/nixcache/warm/credential",
            HELLO
        ]
    );
    // That one key of that one Secret, read-only, and nothing else.
    let pod = pod_spec(&cron);
    let volumes = pod.volumes.as_ref().unwrap();
    assert_eq!(volumes.len(), 1);
    let secret = volumes[0].secret.as_ref().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("warm-token"));
    let item = &secret.items.as_ref().unwrap()[0];
    assert_eq!((item.key.as_str(), item.path.as_str()), ("token", "credential"));
    let mounts = pod.containers[0].volume_mounts.as_ref().unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(
        (mounts[0].mount_path.as_str(), mounts[0].read_only),
        ("/etc/nixcache/warm", Some(true))
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
}
