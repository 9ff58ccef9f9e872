//! The Deployment of `nixcache serve`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    ContainerPort, HTTPGetAction, PodTemplateSpec, Probe, ResourceRequirements, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use nixcache_crds::NixCache;

use super::pod::{self, CONTAINER_PORT, DATA_DIR, READERS_DIR, SIGNING_DIR, UPLOADS_DIR};
use super::{owned_meta, s3_serve, selector_labels, Plan, SECRETS_HASH_ANNOTATION};

/// How long `serve` drains on SIGTERM (`--shutdown-grace`), after it kept accepting for
/// `--shutdown-delay` while the Service's endpoints drop it; the pod gets 5 s more than both.
const SHUTDOWN_GRACE_SECONDS: i64 = 25;
const SHUTDOWN_DELAY_SECONDS: i64 = 5;
/// GC schedule when `gc.schedule` is unset.
pub(super) const DEFAULT_GC_SCHEDULE: &str = "17 3 * * *";

/// The Deployment running `nixcache serve` for `nc`.
pub fn deployment(nc: &NixCache, plan: &Plan) -> Deployment {
    let on_volume = nc.spec.storage.persistent_volume_claim.is_some();
    let strategy = if on_volume {
        // A ReadWriteOnce volume cannot be attached to a second pod on another node.
        DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        }
    } else {
        DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::String("25%".into())),
                max_unavailable: Some(IntOrString::Int(0)),
            }),
        }
    };
    Deployment {
        metadata: owned_meta(nc, nc.name_any(), "proxy"),
        spec: Some(DeploymentSpec {
            // With autoscaling the HorizontalPodAutoscaler owns the replica count (if the
            // cluster serves autoscaling/v2; else spec.replicas stays in force).
            replicas: (!plan.autoscaled(nc)).then_some(nc.spec.replicas),
            revision_history_limit: Some(5),
            selector: LabelSelector {
                match_labels: Some(selector_labels(nc)),
                match_expressions: None,
            },
            strategy: Some(strategy),
            template: pod_template(nc, plan),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn pod_template(nc: &NixCache, plan: &Plan) -> PodTemplateSpec {
    let mut annotations: BTreeMap<String, String> = nc.spec.pod_annotations.clone();
    annotations.insert(SECRETS_HASH_ANNOTATION.into(), plan.secrets_hash.clone());
    let (mut volumes, mut mounts) = pod::serve_volumes(nc, plan);
    let mut env = vec![pod::pod_ip_env()];
    env.extend(pod::env(nc, true));
    // `--sync-pins` as the environment: a proxy image older than pins ignores it (a flag would
    // stop it at start), and the declared pins follow `spec.pins` even when it is empty.
    env.push(pod::plain("NIXCACHE_SYNC_PINS", "true"));
    if let Some(tier) = s3_serve::hot_tier(&nc.spec) {
        volumes.push(tier.volume);
        mounts.push(tier.mount);
        env.extend(tier.env);
    }
    let mut container = pod::container(nc, plan, "nixcache", serve_args(nc, plan));
    container.env = Some(env);
    container.ports = Some(vec![ContainerPort {
        name: Some("http".into()),
        container_port: CONTAINER_PORT,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }]);
    container.volume_mounts = Some(mounts);
    container.resources = Some(nc.spec.resources.clone().unwrap_or_else(default_resources));
    // Slow starts (a bucket check, a SQLite migration) are covered by the startup probe.
    container.startup_probe = Some(probe("/healthz", 2, 60));
    container.liveness_probe = Some(probe("/healthz", 10, 3));
    container.readiness_probe = Some(probe("/readyz", 5, 2));
    let mut spec = pod::pod_spec(nc, vec![container], volumes);
    spec.termination_grace_period_seconds = Some(SHUTDOWN_DELAY_SECONDS + SHUTDOWN_GRACE_SECONDS + 5);
    spec.affinity = nc.spec.affinity.clone();
    if nc.spec.affinity.is_none() {
        spec.topology_spread_constraints = Some(vec![spread(nc)]);
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(selector_labels(nc)),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(spec),
    }
}

/// The arguments of `nixcache serve`. Secrets are files or env from Secrets, never arguments.
pub fn serve_args(nc: &NixCache, plan: &Plan) -> Vec<String> {
    let spec = &nc.spec;
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        format!("0.0.0.0:{CONTAINER_PORT}"),
        "--data-dir".into(),
        DATA_DIR.into(),
        // Replicas reach each other's downloads in progress through the pod IP.
        "--advertise-url".into(),
        format!("http://$(POD_IP):{CONTAINER_PORT}"),
        "--log-format".into(),
        "json".into(),
        "--shutdown-grace".into(),
        format!("{SHUTDOWN_GRACE_SECONDS}s"),
        "--shutdown-delay".into(),
        format!("{SHUTDOWN_DELAY_SECONDS}s"),
        "--secret-key-file".into(),
        format!("{SIGNING_DIR}/secret-key"),
    ];
    args.extend(pod::storage_args(nc));
    args.extend(s3_serve::redirect_args(&nc.spec));
    for (i, upstream) in spec.upstreams.iter().enumerate() {
        args.extend(["--upstream".into(), upstream_arg(upstream)]);
        if upstream.netrc_secret_ref.is_some() {
            args.extend(["--netrc-file".into(), format!("{}/netrc", pod::netrc_dir(i))]);
        }
    }
    for key in spec.upstreams.iter().flat_map(|u| &u.public_keys) {
        args.extend(["--upstream-public-key".into(), key.clone()]);
    }
    if let Some(priority) = spec.priority {
        args.extend(["--priority".into(), priority.to_string()]);
    }
    if let Some(uploads) = &spec.uploads {
        if uploads.allow_put {
            args.push("--allow-put".into());
        }
        if uploads.allow_delete {
            args.push("--allow-delete".into());
        }
        args.extend([
            "--upload-credentials-file".into(),
            format!("{UPLOADS_DIR}/credentials"),
        ]);
    }
    if spec.private.is_some() {
        args.extend([
            "--read-credentials-file".into(),
            format!("{READERS_DIR}/credentials"),
        ]);
    }
    args.extend(in_process_args(nc, plan));
    args.extend(pin_args(nc));
    args.extend(spec.extra_args.iter().cloned());
    args
}

/// `--pin-closure PATH` or `--pin PATH` per entry of `spec.pins`, by path (the order of the list
/// means nothing, and a reordering should not roll the replicas). Every replica gets them
/// wherever GC runs: each makes the database's declared pins this list when it starts
/// (`NIXCACHE_SYNC_PINS`: an empty list too), and the GC CronJob reads them there. A change of
/// the list thus rolls the replicas.
fn pin_args(nc: &NixCache) -> Vec<String> {
    let mut pins: Vec<_> = nc.spec.pins.iter().collect();
    pins.sort_by(|a, b| a.store_path.cmp(&b.store_path));
    pins.into_iter()
        .flat_map(|pin| {
            let flag = if pin.closure { "--pin-closure" } else { "--pin" };
            [flag.to_owned(), pin.store_path.clone()]
        })
        .collect()
}

/// The flags of the GC and fsck that `serve` runs itself: on a volume only this pod reaches the
/// NARs; so do the replicas on S3 when the cluster has no CronJob API (each one run at a time
/// across replicas, through its lease). In-process fsck always repairs.
fn in_process_args(nc: &NixCache, plan: &Plan) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    if let Some(gc) = nc.spec.gc.as_ref().filter(|_| plan.gc_in_replicas(nc)) {
        args.extend(["--max-size".into(), gc.max_size.clone()]);
        let schedule = gc.schedule.as_deref().unwrap_or(DEFAULT_GC_SCHEDULE);
        args.extend(["--gc-schedule".into(), schedule.to_owned()]);
        if gc.keep_uploads {
            args.push("--gc-keep-uploads".into());
        }
    }
    if let Some(fsck) = nc.spec.fsck.as_ref().filter(|_| plan.fsck_in_replicas(nc)) {
        args.extend(["--fsck-schedule".into(), fsck.schedule.clone()]);
        if fsck.verify {
            args.push("--fsck-verify".into());
        }
    }
    args
}

/// The `--upstream` value: its URL with `?priority=N` and `&nar-host=H` for what the spec sets.
fn upstream_arg(upstream: &nixcache_crds::Upstream) -> String {
    let priority = upstream.priority.map(|p| format!("priority={p}"));
    let hosts = upstream.nar_hosts.iter().map(|h| format!("nar-host={h}"));
    let query: Vec<String> = priority.into_iter().chain(hosts).collect();
    if query.is_empty() {
        upstream.url.clone()
    } else {
        format!("{}?{}", upstream.url, query.join("&"))
    }
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("100m".into())),
            ("memory".to_owned(), Quantity("128Mi".into())),
        ])),
        ..ResourceRequirements::default()
    }
}

/// Spread replicas over nodes where possible (never blocks scheduling).
fn spread(nc: &NixCache) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "kubernetes.io/hostname".into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(nc)),
            match_expressions: None,
        }),
        ..TopologySpreadConstraint::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fixtures::{self, NixCacheExt, HELLO};

    const GLIBC: &str = "/nix/store/0c0wf1qw0hh0gmgxbbd1k7ligmakdfrn-glibc-2.40-66";

    fn plan(nc: &NixCache) -> Plan {
        Plan::new(nc, &crate::Config::default(), "secrets".into(), None)
    }

    /// The arguments from the first `--pin…` flag on.
    fn from_pins(nc: &NixCache) -> Vec<String> {
        let args = serve_args(nc, &plan(nc));
        let at = args
            .iter()
            .position(|a| a.starts_with("--pin"))
            .unwrap_or(args.len());
        args[at..].to_vec()
    }

    #[test]
    fn pins_become_pin_closure_or_pin_by_path_before_extra_args() {
        assert!(from_pins(&fixtures::scaled("demo")).is_empty());
        // Always: a spec without pins (any more) clears the declared pins.
        let demo = fixtures::scaled("demo");
        let spec = deployment(&demo, &plan(&demo))
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let env = spec.containers[0].env.clone().unwrap_or_default();
        let sync = env.iter().find(|e| e.name == "NIXCACHE_SYNC_PINS");
        assert_eq!(sync.and_then(|e| e.value.as_deref()), Some("true"));
        assert!(GLIBC < HELLO);
        let mut nc = fixtures::single("one").with_pins(&[(HELLO, true), (GLIBC, false)]);
        nc.spec.extra_args = vec!["--negative-ttl".into(), "5m".into()];
        assert_eq!(
            from_pins(&nc),
            ["--pin", GLIBC, "--pin-closure", HELLO, "--negative-ttl", "5m"]
        );
        // With GC in a CronJob (S3) the replicas still declare the pins: the CronJob reads them.
        let nc = fixtures::scaled("demo").with_pins(&[(GLIBC, false), (HELLO, true)]);
        assert_eq!(from_pins(&nc), ["--pin", GLIBC, "--pin-closure", HELLO]);
    }

    #[test]
    fn a_change_of_the_pins_changes_the_pod_template() {
        let template = |nc: &NixCache| deployment(nc, &plan(nc)).spec.unwrap().template;
        let none = fixtures::scaled("demo");
        let closure = none.clone().with_pins(&[(HELLO, true)]);
        let alone = none.clone().with_pins(&[(HELLO, false)]);
        assert_ne!(template(&none), template(&closure));
        assert_ne!(template(&closure), template(&alone));
        // Reordered: the same template (no rollout).
        let two = none.clone().with_pins(&[(HELLO, true), (GLIBC, false)]);
        let reordered = none.clone().with_pins(&[(GLIBC, false), (HELLO, true)]);
        assert_eq!(template(&two), template(&reordered));
    }

    #[test]
    fn upstream_args_carry_priority_and_nar_hosts() {
        let upstream = |yaml: &str| serde_yaml::from_str::<nixcache_crds::Upstream>(yaml).unwrap();
        let plain = upstream("url: https://cache.nixos.org");
        assert_eq!(upstream_arg(&plain), "https://cache.nixos.org");
        let prio = upstream("{url: 'https://c.example', priority: 30}");
        assert_eq!(upstream_arg(&prio), "https://c.example?priority=30");
        let garnix = upstream(
            "{url: 'https://cache.garnix.io', priority: 50, narHosts: [cdn.garnix.io, '10.0.0.5:8080']}",
        );
        assert_eq!(
            upstream_arg(&garnix),
            "https://cache.garnix.io?priority=50&nar-host=cdn.garnix.io&nar-host=10.0.0.5:8080"
        );
    }
}
