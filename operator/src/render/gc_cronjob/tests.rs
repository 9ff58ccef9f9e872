//! `spec.gc.keepUploads` in the GC CronJob (S3) and in `serve` (GC inside the replicas), and
//! `spec.pins` only on `serve`: the CronJob reads the pins the replicas declared.

use super::*;
use crate::capabilities::{Capabilities, OptionalApi};
use crate::fixtures::{self, NixCacheExt, HELLO};
use crate::render::deployment::serve_args;

fn plan(nc: &NixCache) -> Plan {
    let config = crate::Config::new("registry.test/nixcache:1.0");
    Plan::new(nc, &config, "secrets".into(), Some("db".into()))
}

fn cronjob_args(nc: &NixCache, plan: &Plan) -> Vec<String> {
    let cron = gc_cronjob(nc, plan).expect("a GC CronJob");
    let job = cron.spec.unwrap().job_template.spec.unwrap();
    job.template.spec.unwrap().containers[0].args.clone().unwrap()
}

fn keep_uploads(mut nc: NixCache) -> NixCache {
    nc.spec.gc.as_mut().expect("spec.gc").keep_uploads = true;
    nc
}

fn gc_on_volume() -> NixCache {
    let mut nc = fixtures::single("one");
    nc.spec.gc = Some(nixcache_crds::GarbageCollection {
        max_size: "40G".into(),
        ..Default::default()
    });
    nc
}

#[test]
fn the_cronjob_keeps_uploads_when_asked_and_serve_does_not_collect() {
    let nc = fixtures::scaled("demo");
    let plan = plan(&nc);
    assert_eq!(cronjob_args(&nc, &plan)[..3], ["gc", "--max-size", "500G"]);
    assert!(!cronjob_args(&nc, &plan).contains(&"--gc-keep-uploads".to_owned()));
    let nc = keep_uploads(nc);
    assert_eq!(
        cronjob_args(&nc, &plan)[..4],
        ["gc", "--max-size", "500G", "--gc-keep-uploads"]
    );
    // The CronJob collects: serve gets no GC flag, keepUploads included.
    assert!(!serve_args(&nc, &plan).iter().any(|a| a.starts_with("--gc-")));
}

#[test]
fn in_the_replicas_serve_keeps_uploads_after_its_gc_flags() {
    let nc = gc_on_volume();
    assert!(!serve_args(&nc, &plan(&nc)).contains(&"--gc-keep-uploads".to_owned()));
    let nc = keep_uploads(nc);
    let args = serve_args(&nc, &plan(&nc));
    assert!(gc_cronjob(&nc, &plan(&nc)).is_none());
    assert!(
        args.windows(5).any(|w| w
            == [
                "--max-size",
                "40G",
                "--gc-schedule",
                "17 3 * * *",
                "--gc-keep-uploads"
            ]),
        "{args:?}"
    );
    // On S3 without the CronJob API GC moves into the replicas, keepUploads with it.
    let nc = keep_uploads(fixtures::scaled("demo"));
    let plan = plan(&nc).with_capabilities(Capabilities::without([OptionalApi::CronJob]));
    assert!(serve_args(&nc, &plan).contains(&"--gc-keep-uploads".to_owned()));
}

#[test]
fn pins_go_to_serve_only() {
    let nc = fixtures::scaled("demo").with_pins(&[(HELLO, true)]);
    let plan = plan(&nc);
    assert!(serve_args(&nc, &plan).contains(&"--pin-closure".to_owned()));
    assert!(!cronjob_args(&nc, &plan).iter().any(|a| a.starts_with("--pin")));
}
