//! The optional HorizontalPodAutoscaler and PodDisruptionBudget.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use nixcache_crds::NixCache;

use super::{owned_meta, selector_labels};

/// The autoscaler of the Deployment on CPU, or `None` without `spec.autoscaling`.
pub fn horizontal_pod_autoscaler(nc: &NixCache) -> Option<HorizontalPodAutoscaler> {
    let a = nc.spec.autoscaling.as_ref()?;
    Some(HorizontalPodAutoscaler {
        metadata: owned_meta(nc, nc.name_any(), "proxy"),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: nc.name_any(),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(a.target_cpu_utilization_percentage.unwrap_or(80)),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: None,
        }),
        status: None,
    })
}

/// The disruption budget of the replicas, or `None` without `spec.podDisruptionBudget`.
pub fn pod_disruption_budget(nc: &NixCache) -> Option<PodDisruptionBudget> {
    let p = nc.spec.pod_disruption_budget.as_ref()?;
    Some(PodDisruptionBudget {
        metadata: owned_meta(nc, nc.name_any(), "proxy"),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: p.min_available.clone(),
            max_unavailable: p.max_unavailable.clone(),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(nc)),
                match_expressions: None,
            }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
        }),
        status: None,
    })
}
