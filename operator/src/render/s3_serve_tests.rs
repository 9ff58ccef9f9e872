//! The hot tier and the redirect as rendered into the Deployment (not the CronJobs), and their
//! invalid specs. Beside `s3_serve`, not in it: these render whole objects through `render`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EmptyDirVolumeSource, PodSpec};
use nixcache_crds::{HotTier, NixCache, S3Redirect};

use super::s3_serve::*;
use crate::fixtures;
use crate::render::{deployment, gc_cronjob, Plan};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

fn plan(nc: &NixCache) -> Plan {
    Plan::new(nc, &crate::Config::default(), "secrets".into(), Some("db".into()))
}

fn pod(nc: &NixCache) -> PodSpec {
    deployment(nc, &plan(nc)).spec.unwrap().template.spec.unwrap()
}

fn proxy(pod: &PodSpec) -> &Container {
    &pod.containers[0]
}

/// The hot-tier volume's `sizeLimit`, or `None` without the volume.
fn size_limit(pod: &PodSpec) -> Option<String> {
    let volume = pod.volumes.iter().flatten().find(|v| v.name == HOT_TIER_VOLUME)?;
    volume
        .empty_dir
        .as_ref()?
        .size_limit
        .as_ref()
        .map(|q| q.0.clone())
}

fn env(pod: &PodSpec, name: &str) -> Option<String> {
    let env = proxy(pod).env.iter().flatten();
    env.into_iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

fn hot_tier_mounts(pod: &PodSpec) -> Vec<(String, String)> {
    let mounts = proxy(pod).volume_mounts.iter().flatten();
    mounts
        .filter(|m| m.name == HOT_TIER_VOLUME)
        .map(|m| (m.mount_path.clone(), format!("{:?}", m.read_only)))
        .collect()
}

/// `(NIXCACHE_HOT_TIER_DIR, NIXCACHE_HOT_TIER_SIZE, the emptyDir's sizeLimit)`.
fn tier(nc: &NixCache) -> (Option<String>, Option<String>, Option<String>) {
    let pod = pod(nc);
    (
        env(&pod, "NIXCACHE_HOT_TIER_DIR"),
        env(&pod, "NIXCACHE_HOT_TIER_SIZE"),
        size_limit(&pod),
    )
}

fn on(size: &str, limit: &str) -> (Option<String>, Option<String>, Option<String>) {
    (Some(HOT_TIER_DIR.into()), Some(size.into()), Some(limit.into()))
}

fn with_hot_tier(mut nc: NixCache, enabled: bool, size: Option<&str>) -> NixCache {
    nc.spec.storage.s3.as_mut().unwrap().hot_tier = Some(HotTier {
        enabled,
        size: size.map(|s| Quantity(s.into())),
    });
    nc
}

fn with_ephemeral_storage(mut nc: NixCache, list: &str, value: &str) -> NixCache {
    let quantities = Some(BTreeMap::from([(
        EPHEMERAL_STORAGE.to_owned(),
        Quantity(value.into()),
    )]));
    let resources = nc.spec.resources.get_or_insert_with(Default::default);
    match list {
        "requests" => resources.requests = quantities,
        _ => resources.limits = quantities,
    }
    nc
}

fn with_redirect(mut nc: NixCache, enabled: bool, expiry: Option<&str>) -> NixCache {
    nc.spec.storage.s3.as_mut().unwrap().redirect = Some(S3Redirect {
        enabled,
        expiry: expiry.map(str::to_owned),
    });
    nc
}

fn args(nc: &NixCache) -> Vec<String> {
    proxy(&pod(nc)).args.clone().unwrap()
}

/// The arguments from `--s3-redirect` on, up to the next argument that is no part of it.
fn redirect_flags(nc: &NixCache) -> Vec<String> {
    let args = args(nc);
    let Some(at) = args.iter().position(|a| a == "--s3-redirect") else {
        assert!(!args.iter().any(|a| a.starts_with("--s3-redirect")), "{args:?}");
        return Vec::new();
    };
    args[at..at + 3].to_vec()
}

#[test]
fn s3_gets_a_2gi_hot_tier_in_an_empty_dir_by_default() {
    let nc = fixtures::scaled("demo");
    assert_eq!(nc.spec.storage.s3.as_ref().unwrap().hot_tier, None);
    assert_eq!(tier(&nc), on("2147483648", "2560Mi"));
    let pod = pod(&nc);
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "hot-tier")
        .unwrap();
    assert_eq!(
        volume.empty_dir,
        Some(EmptyDirVolumeSource {
            medium: None,
            size_limit: Some(Quantity("2560Mi".into())),
        })
    );
    assert_eq!(
        hot_tier_mounts(&pod),
        [("/var/cache/nixcache-hot".to_owned(), "None".to_owned())]
    );
    // An explicit `hotTier: {}` is the same default.
    let explicit = with_hot_tier(fixtures::scaled("demo"), true, None);
    assert_eq!(tier(&explicit), on("2147483648", "2560Mi"));
    // Only `serve` keeps a hot tier: the GC CronJob on the same storage gets none.
    let cron = gc_cronjob(&nc, &plan(&nc)).unwrap();
    let job = cron
        .spec
        .unwrap()
        .job_template
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert_eq!(size_limit(&job), None);
    assert_eq!(env(&job, "NIXCACHE_HOT_TIER_DIR"), None);
    // Environment, not flags: an older image ignores it.
    assert!(!args(&nc).iter().any(|a| a.starts_with("--hot-tier")));
}

#[test]
fn an_ephemeral_storage_request_sizes_the_tier_at_half() {
    let nc = with_ephemeral_storage(fixtures::scaled("demo"), "requests", "10Gi");
    assert_eq!(tier(&nc), on("5368709120", "6400Mi"));
    // Odd bytes round down; the limit is then plain bytes.
    let nc = with_ephemeral_storage(fixtures::scaled("demo"), "requests", "3001M");
    assert_eq!(tier(&nc), on("1500500000", "1875625000"));
    // A limit alone is the request, as Kubernetes defaults it.
    let nc = with_ephemeral_storage(fixtures::scaled("demo"), "limits", "8Gi");
    assert_eq!(tier(&nc), on("4294967296", "5Gi"));
    // A request too small to halve: the default.
    let nc = with_ephemeral_storage(fixtures::scaled("demo"), "requests", "1");
    assert_eq!(tier(&nc), on("2147483648", "2560Mi"));
}

#[test]
fn an_explicit_size_wins_over_the_request() {
    let nc = with_ephemeral_storage(fixtures::scaled("demo"), "requests", "10Gi");
    let nc = with_hot_tier(nc, true, Some("20Gi"));
    assert_eq!(tier(&nc), on("21474836480", "25Gi"));
    let nc = with_hot_tier(fixtures::scaled("demo"), true, Some("1.5G"));
    assert_eq!(tier(&nc), on("1500000000", "1875000000"));
    assert_eq!(hot_tier_bytes(&nc.spec), Ok(Some(1_500_000_000)));
}

#[test]
fn a_disabled_hot_tier_renders_no_volume_mount_or_env() {
    let nc = with_hot_tier(fixtures::scaled("demo"), false, Some("20Gi"));
    assert_eq!(tier(&nc), (None, None, None));
    let pod = pod(&nc);
    assert!(hot_tier_mounts(&pod).is_empty());
    let volumes: Vec<&str> = pod.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    assert_eq!(volumes, ["data", "tmp", "signing-key"]);
    assert_eq!(hot_tier_bytes(&nc.spec), Ok(None));
    // Its size is not even read.
    let bad = with_hot_tier(fixtures::scaled("demo"), false, Some("lots"));
    assert_eq!(check(&bad.spec), Ok(()));
}

#[test]
fn redirect_renders_its_flags_only_when_enabled() {
    let nc = fixtures::scaled("demo");
    assert!(redirect_flags(&nc).is_empty());
    let off = with_redirect(fixtures::scaled("demo"), false, Some("1h"));
    assert!(redirect_flags(&off).is_empty());
    let enabled = with_redirect(fixtures::scaled("demo"), true, None);
    assert_eq!(
        redirect_flags(&enabled),
        ["--s3-redirect", "--s3-redirect-expiry", "5m"]
    );
    let mut hour = with_redirect(fixtures::scaled("demo"), true, Some("1h 30m"));
    hour.spec.extra_args = vec!["--s3-redirect-expiry".into(), "2h".into()];
    assert_eq!(
        redirect_flags(&hour),
        ["--s3-redirect", "--s3-redirect-expiry", "1h 30m"]
    );
    // Before `extraArgs`, so a repeated flag there takes precedence.
    assert_eq!(args(&hour).last().map(String::as_str), Some("2h"));
    // Redirected hits never reach a hot tier (the proxy refuses the two together): none.
    assert_eq!(tier(&enabled), (None, None, None));
    assert!(hot_tier_mounts(&pod(&enabled)).is_empty());
    assert_eq!(
        tier(&off),
        on("2147483648", "2560Mi"),
        "a redirect turned off keeps the tier"
    );
}

#[test]
fn a_volume_gets_neither_hot_tier_nor_redirect() {
    let nc = with_ephemeral_storage(fixtures::single("one"), "requests", "10Gi");
    assert_eq!(tier(&nc), (None, None, None));
    let pod = pod(&nc);
    assert!(hot_tier_mounts(&pod).is_empty());
    let volumes: Vec<&str> = pod.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    assert_eq!(volumes, ["data", "tmp", "signing-key"]);
    assert!(redirect_flags(&nc).is_empty());
    assert_eq!(hot_tier_bytes(&nc.spec), Ok(None));
    assert_eq!(check(&nc.spec), Ok(()));
}

#[test]
fn invalid_sizes_and_expiries_name_the_field() {
    let message = |nc: &NixCache| check(&nc.spec).unwrap_err().to_string();
    let syntax = "is not a quantity (e.g. 2Gi, 512Mi, 1.5G or plain bytes)";
    for (size, says) in [
        ("0", "must be more than zero bytes"),
        ("-1Gi", "must be more than zero bytes"),
        ("lots", syntax),
        ("2 Gi", syntax),
        ("16Ei", "is too large"),
    ] {
        let nc = with_hot_tier(fixtures::scaled("demo"), true, Some(size));
        assert_eq!(
            message(&nc),
            format!("spec.storage.s3.hotTier.size {size:?} {says}"),
            "{size}"
        );
        // Never rendered: the spec is blocked first, and the builder leaves the tier out.
        assert_eq!(tier(&nc), (None, None, None));
    }
    let nc = with_ephemeral_storage(fixtures::scaled("demo"), "requests", "much");
    assert!(message(&nc).starts_with("spec.resources.requests.ephemeral-storage \"much\" is not a quantity"));
    // An explicit size does not need the request.
    assert_eq!(check(&with_hot_tier(nc, true, Some("1Gi")).spec), Ok(()));
    for expiry in ["5", "soon", "5 parsecs"] {
        let nc = with_redirect(fixtures::scaled("demo"), true, Some(expiry));
        let found = message(&nc);
        let want = format!("spec.storage.s3.redirect.expiry {expiry:?} is not a duration such as 5m or 1h: ");
        assert!(found.starts_with(&want), "{found}");
    }
    for expiry in ["0s", "500ms", "8d", "7days 1s"] {
        let nc = with_redirect(fixtures::scaled("demo"), true, Some(expiry));
        assert!(message(&nc).contains("is outside 1s to 7d"), "{expiry}");
    }
    for expiry in ["1s", "5m", "1h 30m", "7d"] {
        let nc = with_redirect(fixtures::scaled("demo"), true, Some(expiry));
        assert_eq!(check(&nc.spec), Ok(()), "{expiry}");
    }
}
