//! Which optional APIs the cluster serves (API discovery), and what their absence means for a
//! NixCache.
//!
//! The operator speaks one version of each API (never a `v1beta1`): `batch/v1` CronJob and
//! `policy/v1` PodDisruptionBudget (Kubernetes 1.21+), `autoscaling/v2` HorizontalPodAutoscaler
//! (1.23+). On an older cluster only the feature behind a missing API is off: the controller
//! neither watches nor applies it, GC and a repairing fsck fall back to the replicas
//! (`serve --gc-schedule`, `--fsck-schedule`), and the NixCache gets the condition
//! [`CONDITION_FEATURES_AVAILABLE`] saying what is not applied.
//!
//! Discovery reads `GET /apis/<group>/<version>` (the API server allows it to every
//! authenticated user through the `system:discovery` ClusterRole; no grant in the chart).

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;
use kube::Client;
use nixcache_crds::NixCache;

use crate::error::api_code;
use crate::Error;

/// Condition type on a NixCache whose spec asks for something the cluster's API lacks; absent
/// when everything the spec asks for is served.
pub const CONDITION_FEATURES_AVAILABLE: &str = "FeaturesAvailable";

/// An API the operator uses only for an optional feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OptionalApi {
    /// `batch/v1` CronJob: the GC and fsck CronJobs (S3 storage) and the warm-up CronJob.
    CronJob,
    /// `autoscaling/v2` HorizontalPodAutoscaler: `spec.autoscaling`.
    HorizontalPodAutoscaler,
    /// `policy/v1` PodDisruptionBudget: `spec.podDisruptionBudget`.
    PodDisruptionBudget,
}

impl OptionalApi {
    /// Every optional API.
    pub const ALL: [Self; 3] = [
        Self::CronJob,
        Self::HorizontalPodAutoscaler,
        Self::PodDisruptionBudget,
    ];

    /// The group and version the operator speaks, e.g. `batch/v1`.
    pub fn group_version(self) -> &'static str {
        match self {
            Self::CronJob => "batch/v1",
            Self::HorizontalPodAutoscaler => "autoscaling/v2",
            Self::PodDisruptionBudget => "policy/v1",
        }
    }

    /// The resource (plural) in discovery.
    pub fn resource(self) -> &'static str {
        match self {
            Self::CronJob => "cronjobs",
            Self::HorizontalPodAutoscaler => "horizontalpodautoscalers",
            Self::PodDisruptionBudget => "poddisruptionbudgets",
        }
    }

    /// The kind, for messages.
    pub fn kind(self) -> &'static str {
        match self {
            Self::CronJob => "CronJob",
            Self::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            Self::PodDisruptionBudget => "PodDisruptionBudget",
        }
    }

    /// The first Kubernetes release that serves this version.
    pub fn since(self) -> &'static str {
        match self {
            Self::CronJob | Self::PodDisruptionBudget => "1.21",
            Self::HorizontalPodAutoscaler => "1.23",
        }
    }

    fn not_served(self) -> String {
        format!(
            "{} {} is not served by this cluster (Kubernetes {}+)",
            self.group_version(),
            self.kind(),
            self.since()
        )
    }
}

/// The optional APIs the cluster serves. The default serves all of them (what tests and a
/// current cluster see).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    unserved: BTreeSet<OptionalApi>,
}

impl Capabilities {
    /// Capabilities of a cluster lacking `unserved`.
    pub fn without(unserved: impl IntoIterator<Item = OptionalApi>) -> Self {
        Self {
            unserved: unserved.into_iter().collect(),
        }
    }

    /// Whether the cluster serves `api`.
    pub fn serves(&self, api: OptionalApi) -> bool {
        !self.unserved.contains(&api)
    }

    /// The optional APIs the cluster does not serve.
    pub fn unserved(&self) -> impl Iterator<Item = OptionalApi> + '_ {
        self.unserved.iter().copied()
    }
}

/// Asks the API server which optional APIs it serves: a group-version answering 404, or listing
/// no such resource, is not served. Any other failure is an error (the caller retries): an API
/// is never taken for missing because the API server was briefly unreachable.
pub async fn discover(client: &Client) -> Result<Capabilities, Error> {
    let mut unserved = BTreeSet::new();
    for api in OptionalApi::ALL {
        let gv = api.group_version();
        match client.list_api_group_resources(gv).await {
            Ok(list) if lists(&list, api.resource()) => {}
            Ok(_) => drop(unserved.insert(api)),
            Err(e) if api_code(&e) == Some(404) => drop(unserved.insert(api)),
            Err(e) => return Err(Error::kube(format!("discover /apis/{gv}"), e)),
        }
    }
    Ok(Capabilities { unserved })
}

fn lists(list: &APIResourceList, resource: &str) -> bool {
    list.resources.iter().any(|r| r.name == resource)
}

/// Discovers again every `interval` and returns the capabilities once they differ from
/// `current` (the cluster was upgraded or downgraded); failed attempts are logged and skipped.
pub async fn changed(client: &Client, current: &Capabilities, interval: Duration) -> Capabilities {
    loop {
        tokio::time::sleep(interval).await;
        match discover(client).await {
            Ok(found) if found != *current => return found,
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "API discovery failed; keeping the APIs found before"),
        }
    }
}

/// What the cluster's missing APIs mean for one NixCache: the [`CONDITION_FEATURES_AVAILABLE`]
/// condition, or none when every feature its spec asks for is served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeatureReport {
    /// Features of the spec that are not applied at all.
    pub not_applied: Vec<String>,
    /// Features that run another way (GC, fsck inside the replicas), each with the condition
    /// reason it stands for.
    pub fallbacks: Vec<(&'static str, String)>,
}

impl FeatureReport {
    /// The report for `nc`'s spec on a cluster with `capabilities`.
    pub fn new(nc: &NixCache, capabilities: &Capabilities) -> Self {
        let spec = &nc.spec;
        let mut report = Self::default();
        for api in capabilities.unserved() {
            match api {
                OptionalApi::CronJob => report.without_cronjobs(nc),
                OptionalApi::HorizontalPodAutoscaler if spec.autoscaling.is_some() => {
                    report.not_applied.push(format!(
                        "{}: spec.autoscaling is not applied, the Deployment keeps spec.replicas ({})",
                        api.not_served(),
                        spec.replicas
                    ));
                }
                OptionalApi::PodDisruptionBudget if spec.pod_disruption_budget.is_some() => {
                    report.not_applied.push(format!(
                        "{}: spec.podDisruptionBudget is not applied",
                        api.not_served()
                    ));
                }
                _ => {}
            }
        }
        report
    }

    /// Without `batch/v1` CronJob: warm-up and a report-only fsck are not applied, GC and a
    /// repairing fsck move into the replicas.
    fn without_cronjobs(&mut self, nc: &NixCache) {
        let spec = &nc.spec;
        let api = OptionalApi::CronJob;
        if spec.warm.is_some() {
            self.not_applied.push(format!(
                "{}: spec.warm is not applied (nothing is fetched ahead; `nixcache warm` can be run by hand)",
                api.not_served()
            ));
        }
        if spec.storage.s3.is_none() {
            return;
        }
        if let Some(gc) = &spec.gc {
            self.fallbacks.push((
                "GarbageCollectionInProcess",
                format!(
                    "{}: spec.gc runs inside the replicas (`nixcache serve --gc-schedule`, one run at a \
                     time across replicas){} instead of a CronJob",
                    api.not_served(),
                    read_in_utc(gc.time_zone.as_deref())
                ),
            ));
        }
        match &spec.fsck {
            Some(fsck) if fsck.repair => self.fallbacks.push((
                "FsckInProcess",
                format!(
                    "{}: spec.fsck runs inside the replicas (`nixcache serve --fsck-schedule`, \
                     repairing, one run at a time across replicas){} instead of a CronJob",
                    api.not_served(),
                    read_in_utc(fsck.time_zone.as_deref())
                ),
            )),
            Some(_) => self.not_applied.push(format!(
                "{}: spec.fsck is not applied (the replicas' own fsck always repairs, and \
                 spec.fsck.repair is false; `nixcache fsck` can be run by hand)",
                api.not_served()
            )),
            None => {}
        }
    }

    /// `(status, reason, message)` of the condition, or `None` when nothing is missing: `False`
    /// (`APINotServed`) when a feature is not applied, `True` when features only run another
    /// way, with the reason of the first (`GarbageCollectionInProcess`, else `FsckInProcess`).
    pub fn condition(&self) -> Option<(&'static str, &'static str, String)> {
        let message = self
            .not_applied
            .iter()
            .chain(self.fallbacks.iter().map(|(_, message)| message))
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if !self.not_applied.is_empty() {
            Some(("False", "APINotServed", message))
        } else {
            let (reason, _) = self.fallbacks.first()?;
            Some(("True", reason, message))
        }
    }
}

/// What a replica makes of a CronJob's time zone: ` (its schedule is read in UTC, not in ZONE)`,
/// or nothing for UTC.
fn read_in_utc(time_zone: Option<&str>) -> String {
    match time_zone {
        Some(zone) if !matches!(zone, "UTC" | "Etc/UTC") => {
            format!(" (its schedule is read in UTC, not in {zone})")
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use nixcache_crds::{Autoscaling, PodDisruptionBudgetSpec};

    use super::*;
    use crate::fixtures::{self, NixCacheExt};

    #[test]
    fn a_served_cluster_reports_nothing() {
        let nc = fixtures::scaled("demo");
        assert_eq!(
            FeatureReport::new(&nc, &Capabilities::default()).condition(),
            None
        );
    }

    #[test]
    fn missing_apis_name_the_api_the_release_and_what_happens() {
        let mut nc = fixtures::scaled("demo");
        nc.spec.autoscaling = Some(Autoscaling {
            min_replicas: 2,
            max_replicas: 5,
            target_cpu_utilization_percentage: None,
        });
        let old = Capabilities::without(OptionalApi::ALL);
        let (status, reason, message) = FeatureReport::new(&nc, &old).condition().unwrap();
        assert_eq!((status, reason), ("False", "APINotServed"));
        assert!(
            message.contains(
                "autoscaling/v2 HorizontalPodAutoscaler is not served by this cluster (Kubernetes 1.23+)"
            ) && message.contains("the Deployment keeps spec.replicas (3)")
                && message.contains("batch/v1 CronJob")
                && message.contains("--gc-schedule"),
            "{message}"
        );
        // No PDB in the spec: nothing said about it.
        assert!(!message.contains("PodDisruptionBudget"), "{message}");

        nc.spec.autoscaling = None;
        nc.spec.pod_disruption_budget = Some(PodDisruptionBudgetSpec {
            min_available: None,
            max_unavailable: Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)),
        });
        let only_pdb = Capabilities::without([OptionalApi::PodDisruptionBudget]);
        let (_, _, message) = FeatureReport::new(&nc, &only_pdb).condition().unwrap();
        assert_eq!(
            message,
            "policy/v1 PodDisruptionBudget is not served by this cluster (Kubernetes 1.21+): \
             spec.podDisruptionBudget is not applied"
        );
    }

    #[test]
    fn gc_in_the_replicas_is_a_fallback_not_a_missing_feature() {
        let nc = fixtures::scaled("demo");
        let no_cronjobs = Capabilities::without([OptionalApi::CronJob]);
        let (status, reason, _) = FeatureReport::new(&nc, &no_cronjobs).condition().unwrap();
        assert_eq!((status, reason), ("True", "GarbageCollectionInProcess"));
        // On a volume GC always runs in the replica: nothing to report.
        let volume = fixtures::single("v");
        assert_eq!(FeatureReport::new(&volume, &no_cronjobs).condition(), None);
    }

    #[test]
    fn warm_up_without_cronjobs_is_not_applied() {
        let no_cronjobs = Capabilities::without([OptionalApi::CronJob]);
        let warm = fixtures::single("v").with_warm("30 4 * * *", &[fixtures::HELLO]);
        let (status, reason, message) = FeatureReport::new(&warm, &no_cronjobs).condition().unwrap();
        assert_eq!((status, reason), ("False", "APINotServed"));
        assert_eq!(
            message,
            "batch/v1 CronJob is not served by this cluster (Kubernetes 1.21+): spec.warm is not applied \
             (nothing is fetched ahead; `nixcache warm` can be run by hand)"
        );
        // With GC on S3 too: both are said, the missing feature first.
        let both = fixtures::scaled("demo").with_warm("30 4 * * *", &[fixtures::HELLO]);
        let (status, _, message) = FeatureReport::new(&both, &no_cronjobs).condition().unwrap();
        assert_eq!(status, "False");
        assert!(
            message.contains("spec.warm is not applied") && message.contains("--gc-schedule"),
            "{message}"
        );
        assert_eq!(
            FeatureReport::new(&both, &Capabilities::default()).condition(),
            None
        );
    }

    #[test]
    fn fsck_without_cronjobs_moves_into_the_replicas_unless_it_only_reports() {
        let no_cronjobs = Capabilities::without([OptionalApi::CronJob]);
        let mut nc = fixtures::scaled("demo").with_fsck("0 5 * * 0");
        nc.spec.gc = None;
        let (status, reason, message) = FeatureReport::new(&nc, &no_cronjobs).condition().unwrap();
        assert_eq!((status, reason), ("True", "FsckInProcess"));
        assert_eq!(
            message,
            "batch/v1 CronJob is not served by this cluster (Kubernetes 1.21+): spec.fsck runs inside \
             the replicas (`nixcache serve --fsck-schedule`, repairing, one run at a time across \
             replicas) instead of a CronJob"
        );
        // With GC too: both are said, under GC's reason.
        nc.spec.gc = fixtures::scaled("demo").spec.gc;
        nc.spec.fsck.as_mut().unwrap().time_zone = Some("Europe/Berlin".into());
        let (status, reason, message) = FeatureReport::new(&nc, &no_cronjobs).condition().unwrap();
        assert_eq!((status, reason), ("True", "GarbageCollectionInProcess"));
        assert!(
            message.contains("--gc-schedule")
                && message.contains("across replicas) (its schedule is read in UTC, not in Europe/Berlin)"),
            "{message}"
        );
        // A report-only check cannot run in the replicas: not applied.
        nc.spec.fsck.as_mut().unwrap().repair = false;
        let (status, reason, message) = FeatureReport::new(&nc, &no_cronjobs).condition().unwrap();
        assert_eq!((status, reason), ("False", "APINotServed"));
        assert!(
            message.contains("spec.fsck is not applied") && message.contains("--gc-schedule"),
            "{message}"
        );
        // On a volume fsck always runs in the replica: nothing to report.
        let volume = fixtures::single("v").with_fsck("0 5 * * 0");
        assert_eq!(FeatureReport::new(&volume, &no_cronjobs).condition(), None);
    }
}
