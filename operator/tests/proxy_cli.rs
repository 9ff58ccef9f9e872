//! The command lines the operator renders are ones the real `nixcache` accepts: for every
//! example, the Deployment's `serve` (also with GC and fsck inside the replicas, with pins, and
//! with the hot tier and S3 redirects), the migration Job's `migrate`, the CronJobs' `gc` and
//! `fsck` and the warm-up CronJob's `warm` are parsed by the proxy's own CLI (flags and `NIXCACHE_*` env), so a renamed or removed flag
//! on either side fails here rather than in a cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use nixcache::cli::{Cli, Command};
use nixcache_crds::NixCache;
use nixcache_operator::capabilities::{Capabilities, OptionalApi};
use nixcache_operator::fixtures::HELLO;
use nixcache_operator::render::{self, Plan};
use nixcache_operator::Config;

fn examples() -> Vec<(String, NixCache)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
        .into_iter()
        .map(|path| {
            let nc: NixCache = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            (path.file_name().unwrap().to_string_lossy().into_owned(), nc)
        })
        .collect()
}

/// Parses the container's command line with the proxy's CLI, its env set as the kubelet would
/// (values from Secrets get a stand-in of the right shape).
fn parse(container: &Container) -> Command {
    let env = container.env.clone().unwrap_or_default();
    for var in &env {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => v.clone(),
            (None, _) if var.name.ends_with("DATABASE_URL") => {
                "postgres://nixcache:secret@db/nixcache".into()
            }
            (None, _) => "from-a-secret".into(),
        };
        std::env::set_var(&var.name, value);
    }
    let mut argv = vec!["nixcache".to_owned()];
    argv.extend(container.command.iter().flatten().skip(1).cloned());
    argv.extend(container.args.clone().unwrap_or_default());
    let parsed = Cli::try_parse_from(&argv);
    for var in &env {
        std::env::remove_var(&var.name);
    }
    match parsed {
        Ok(cli) => cli.command,
        Err(err) => panic!("nixcache rejects {argv:?}:\n{err}"),
    }
}

fn first_container(spec: Option<&k8s_openapi::api::core::v1::PodSpec>) -> &Container {
    &spec.expect("a pod spec").containers[0]
}

#[test]
fn rendered_command_lines_parse_with_the_proxy_cli() {
    for (file, nc) in examples() {
        // As the reconciler does: a database hash only for a database URL from a Secret.
        let database = nc
            .spec
            .database
            .url_secret_ref
            .as_ref()
            .map(|_| "abcdef0123".to_owned());
        let plan = Plan::new(&nc, &Config::default(), "0123456789".into(), database);
        let deployment = render::deployment(&nc, &plan);
        let pod = deployment.spec.as_ref().unwrap().template.spec.as_ref();
        let Command::Serve(serve) = parse(first_container(pod)) else {
            panic!("{file}: the Deployment does not run `nixcache serve`");
        };
        assert!(
            serve.advertise_url.is_some(),
            "{file}: replicas need --advertise-url"
        );
        assert_eq!(
            serve.access.read_credentials_file.is_some(),
            nc.spec.private.is_some(),
            "{file}: a private cache reads its read credentials"
        );
        serve
            .backend
            .storage
            .s3_config()
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        if let Some(job) = render::migrate_job(&nc, &plan) {
            let pod = job.spec.as_ref().unwrap().template.spec.as_ref();
            let command = parse(first_container(pod));
            assert!(
                matches!(command, Command::Migrate(_)),
                "{file}: the Job runs {command:?}"
            );
        }
        if let Some(cron) = render::gc_cronjob(&nc, &plan) {
            let job = cron.spec.as_ref().unwrap().job_template.spec.as_ref().unwrap();
            let Command::Gc(gc) = parse(first_container(job.template.spec.as_ref())) else {
                panic!("{file}: the CronJob does not run `nixcache gc`");
            };
            assert!(gc.max_size > 0, "{file}");
            assert_eq!(
                gc.backend.storage.s3_config().unwrap().is_some(),
                serve.backend.storage.s3_config().unwrap().is_some(),
                "{file}: gc must see the storage serve uses"
            );
        }
        fsck_parses(&file, nc.clone(), &plan);
        pins_and_kept_uploads_parse(&file, nc.clone(), &plan);
        s3_serving_parses(&file, nc.clone(), &plan);
        warm_parses(&file, nc, &plan);
    }
}

/// Every example with a sized hot tier, then with redirects on (which leave the tier out: the
/// proxy refuses the two together): on S3, `serve` reads the hot tier from the environment and
/// takes the redirect flags; on a volume it gets neither.
fn s3_serving_parses(file: &str, nc: NixCache, plan: &Plan) {
    for redirect in [false, true] {
        let mut nc = nc.clone();
        if let Some(s3) = nc.spec.storage.s3.as_mut() {
            s3.hot_tier = Some(nixcache_crds::HotTier {
                enabled: true,
                size: Some(Quantity("3Gi".into())),
            });
            s3.redirect = Some(nixcache_crds::S3Redirect {
                enabled: redirect,
                expiry: Some("1h 30m".into()),
            });
        }
        let deployment = render::deployment(&nc, plan);
        let pod = deployment.spec.as_ref().unwrap().template.spec.as_ref();
        let Command::Serve(serve) = parse(first_container(pod)) else {
            panic!("{file}: the Deployment does not run `nixcache serve`");
        };
        let hits = &serve.hits;
        if nc.spec.storage.s3.is_none() {
            assert_eq!(hits.hot_tier_dir, None, "{file}");
            assert!(!hits.s3_redirect, "{file}");
        } else if redirect {
            assert_eq!(hits.hot_tier_dir, None, "{file}");
            assert!(hits.s3_redirect, "{file}");
            assert_eq!(hits.s3_redirect_expiry, Duration::from_secs(5400), "{file}");
        } else {
            let dir = Path::new(render::HOT_TIER_DIR);
            assert_eq!(hits.hot_tier_dir.as_deref(), Some(dir), "{file}");
            assert_eq!(hits.hot_tier_size, 3 << 30, "{file}");
            assert!(!hits.s3_redirect, "{file}");
        }
    }
}

/// Every example with `spec.pins` (one closure, one path alone) and `gc.keepUploads`: `serve`
/// declares exactly those pins, and keeps uploads where it collects itself (on a volume, or on
/// S3 without CronJobs); the GC CronJob keeps them (S3).
fn pins_and_kept_uploads_parse(file: &str, mut nc: NixCache, plan: &Plan) {
    let glibc = "/nix/store/0c0wf1qw0hh0gmgxbbd1k7ligmakdfrn-glibc-2.40-66";
    nc.spec.pins = vec![
        nixcache_crds::Pin {
            store_path: HELLO.into(),
            closure: true,
        },
        nixcache_crds::Pin {
            store_path: glibc.into(),
            closure: false,
        },
    ];
    nc.spec
        .gc
        .get_or_insert_with(|| nixcache_crds::GarbageCollection {
            max_size: "40G".into(),
            ..Default::default()
        });
    if let Some(gc) = nc.spec.gc.as_mut() {
        gc.keep_uploads = true;
    }
    if let Some(cron) = render::gc_cronjob(&nc, plan) {
        let job = cron.spec.as_ref().unwrap().job_template.spec.as_ref().unwrap();
        let Command::Gc(gc) = parse(first_container(job.template.spec.as_ref())) else {
            panic!("{file}: the CronJob does not run `nixcache gc`");
        };
        assert!(gc.gc_keep_uploads, "{file}: the GC CronJob keeps uploads");
    }
    let in_replicas = plan
        .clone()
        .with_capabilities(Capabilities::without([OptionalApi::CronJob]));
    for (plan, gc_in_serve) in [(plan, plan.gc_in_replicas(&nc)), (&in_replicas, true)] {
        let deployment = render::deployment(&nc, plan);
        let pod = deployment.spec.as_ref().unwrap().template.spec.as_ref();
        let Command::Serve(serve) = parse(first_container(pod)) else {
            panic!("{file}: the Deployment does not run `nixcache serve`");
        };
        let declared: Vec<(String, bool)> = serve
            .gc
            .declared_pins()
            .iter()
            .map(|p| (p.path.to_absolute(), p.closure))
            .collect();
        assert_eq!(
            declared,
            [(HELLO.to_owned(), true), (glibc.to_owned(), false)],
            "{file}"
        );
        let container = first_container(pod);
        let sync = container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "NIXCACHE_SYNC_PINS");
        assert_eq!(
            sync.and_then(|e| e.value.as_deref()),
            Some("true"),
            "{file}: the replicas keep the declared pins in line"
        );
        assert_eq!(
            serve.gc.gc_keep_uploads, gc_in_serve,
            "{file}: serve keeps uploads when it collects garbage itself"
        );
    }
}

/// Every example with a verifying, repairing `spec.fsck`: the CronJob's `fsck` (S3), and the
/// replicas' `serve --fsck-schedule --fsck-verify` (on a volume, or on S3 without CronJobs).
fn fsck_parses(file: &str, mut nc: NixCache, plan: &Plan) {
    nc.spec.fsck = Some(nixcache_crds::Fsck {
        schedule: "0 5 * * 0".into(),
        time_zone: None,
        verify: true,
        repair: true,
    });
    if let Some(cron) = render::fsck_cronjob(&nc, plan) {
        let job = cron.spec.as_ref().unwrap().job_template.spec.as_ref().unwrap();
        let Command::Fsck(fsck) = parse(first_container(job.template.spec.as_ref())) else {
            panic!("{file}: the fsck CronJob does not run `nixcache fsck`");
        };
        assert!(fsck.repair && fsck.verify, "{file}");
        assert!(
            fsck.backend.storage.s3_config().unwrap().is_some(),
            "{file}: fsck checks the bucket serve uses"
        );
    }
    let in_replicas = plan
        .clone()
        .with_capabilities(Capabilities::without([OptionalApi::CronJob]));
    assert!(in_replicas.fsck_in_replicas(&nc), "{file}");
    let deployment = render::deployment(&nc, &in_replicas);
    let container = first_container(deployment.spec.as_ref().unwrap().template.spec.as_ref());
    let args = container.args.clone().unwrap();
    assert!(
        args.windows(3)
            .any(|w| w == ["--fsck-schedule", "0 5 * * 0", "--fsck-verify"]),
        "{file}: {args:?}"
    );
    assert!(
        matches!(parse(container), Command::Serve(_)),
        "{file}: serve takes --fsck-schedule and --fsck-verify"
    );
}

/// The example with every `spec.warm` setting: `warm` against the Service, with them all.
fn warm_parses(file: &str, mut nc: NixCache, plan: &Plan) {
    let other = "/nix/store/0c0wf1qw0hh0gmgxbbd1k7ligmakdfrn-glibc-2.40-66";
    nc.spec.warm = Some(nixcache_crds::Warm {
        schedule: "30 4 * * *".into(),
        time_zone: None,
        paths: vec![HELLO.into(), other.into()],
        narinfos_only: true,
        concurrency: Some(3),
        // A private cache's warm-up shows a credential; another's may.
        credential_secret_ref: Some(nixcache_crds::SecretKeyRef {
            name: "warm-credential".into(),
            key: None,
        }),
    });
    let cron = render::warm_cronjob(&nc, plan).unwrap().unwrap();
    let job = cron.spec.as_ref().unwrap().job_template.spec.as_ref().unwrap();
    let Command::Warm(warm) = parse(first_container(job.template.spec.as_ref())) else {
        panic!("{file}: the warm-up CronJob does not run `nixcache warm`");
    };
    assert_eq!(warm.url, render::service_url(&nc), "{file}");
    let paths: Vec<String> = warm.paths.iter().map(|p| p.to_absolute()).collect();
    assert_eq!(paths, [HELLO, other], "{file}");
    assert!(warm.narinfos_only, "{file}");
    assert_eq!(warm.concurrency, 3, "{file}");
    assert!(warm.auth_file.is_some(), "{file}");
}
