//! `spec.pins` and `spec.gc.keepUploads` against the scripted API server: the pins reach every
//! replica's `serve` (a change of the list patches the pod template, which rolls the replicas:
//! that is how the list is applied), never the GC CronJob (it reads the pins the replicas
//! declared in the database); `keepUploads` reaches whichever collects garbage; a list `serve`
//! would refuse is an invalid spec, with nothing applied.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::world::{lines, World, BATCH};
use nixcache_operator::fixtures::{self, NixCacheExt, HELLO};
use serde_json::{json, Value};

const GLIBC: &str = "/nix/store/0c0wf1qw0hh0gmgxbbd1k7ligmakdfrn-glibc-2.40-66";

fn template(world: &World) -> Value {
    let deployment = world
        .api
        .get(&world.deployment_path())
        .expect("the Deployment exists");
    deployment["spec"]["template"].clone()
}

fn serve_args(world: &World) -> Vec<String> {
    serde_json::from_value(template(world)["spec"]["containers"][0]["args"].clone()).unwrap()
}

/// The `--pin…` flags and their paths, in order.
fn pin_args(world: &World) -> Vec<String> {
    let args = serve_args(world);
    let at = args
        .iter()
        .position(|a| a.starts_with("--pin"))
        .unwrap_or(args.len());
    args[at..].to_vec()
}

fn gc_args(world: &World) -> Vec<String> {
    let cronjob = world
        .api
        .get(&format!("{BATCH}/cronjobs/demo-gc"))
        .expect("the GC CronJob");
    let args = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"];
    serde_json::from_value(args.clone()).unwrap()
}

#[tokio::test]
async fn pins_reach_the_replicas_and_a_change_of_the_list_rolls_them() {
    let mut nc = fixtures::scaled("demo").with_pins(&[(HELLO, true)]);
    nc.spec.gc.as_mut().unwrap().keep_uploads = true;
    let world = World::new(&nc);
    world.create_ready(3).await;
    assert_eq!(pin_args(&world), ["--pin-closure", HELLO]);
    let gc = gc_args(&world);
    assert_eq!(gc[..4], ["gc", "--max-size", "500G", "--gc-keep-uploads"]);
    assert!(!gc.iter().any(|a| a.starts_with("--pin")), "{gc:?}");
    assert!(!serve_args(&world).contains(&"--gc-keep-uploads".to_owned()));

    // Another list: the Deployment is patched with a new pod template.
    let before = template(&world);
    world.edit(|nc| {
        nc["spec"]["pins"] = json!([{"storePath": GLIBC, "closure": false}, {"storePath": HELLO}]);
    });
    let log = world.reconcile().await;
    assert!(
        lines(&log).contains(&format!("PATCH {}", world.deployment_path())),
        "{:#?}",
        lines(&log)
    );
    assert_eq!(pin_args(&world), ["--pin", GLIBC, "--pin-closure", HELLO]);
    assert_ne!(template(&world), before);

    // The list removed: no pin flags, so the replicas unpin every declared path.
    world.edit(|nc| drop(nc["spec"].as_object_mut().unwrap().remove("pins")));
    world.reconcile().await;
    assert_eq!(pin_args(&world), Vec::<String>::new());
}

#[tokio::test]
async fn on_a_volume_the_replica_keeps_uploads_and_declares_the_pins() {
    let mut nc = fixtures::single("demo").with_pins(&[(GLIBC, false)]);
    nc.spec.gc = Some(nixcache_crds::GarbageCollection {
        max_size: "40G".into(),
        keep_uploads: true,
        ..Default::default()
    });
    let world = World::new(&nc);
    world.create_ready(1).await;
    assert!(world.api.get(&format!("{BATCH}/cronjobs/demo-gc")).is_none());
    let args = serve_args(&world);
    assert!(args.contains(&"--gc-keep-uploads".to_owned()), "{args:?}");
    assert_eq!(pin_args(&world), ["--pin", GLIBC]);
}

#[tokio::test]
async fn a_pin_serve_would_refuse_is_an_invalid_spec() {
    let reserved = "/nix/store/0c0wf1qw0hh0gmgxbbd1k7ligmakdfrn-.-foo";
    for (pins, says) in [
        (vec![(HELLO, true), (reserved, true)], "spec.pins[1].storePath"),
        (
            vec![
                (HELLO, true),
                ("/nix/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4-hello", false),
            ],
            "spec.pins[0] and spec.pins[1] both pin",
        ),
    ] {
        let world = World::new(&fixtures::single("demo").with_pins(&pins));
        let log = world.reconcile().await;
        assert!(
            !lines(&log)
                .iter()
                .any(|l| l.starts_with("PATCH") && !l.ends_with("/status")),
            "nothing is applied: {:#?}",
            lines(&log)
        );
        let (status, reason, message) = world.condition("Degraded");
        assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidSpec"));
        assert!(message.starts_with(says), "{message}");
    }
}
