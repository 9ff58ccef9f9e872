//! The Deployment, and who owns its `spec.replicas`: the operator (from `spec.replicas`) or, with
//! `spec.autoscaling`, the HorizontalPodAutoscaler.
//!
//! Server-side apply removes a field its manager stops applying unless another manager owns it
//! too, and a Deployment without `spec.replicas` has one replica. So before the operator's apply
//! leaves the field out, the current count is applied under a second field manager (the recipe
//! of the Kubernetes documentation for handing a field over to an autoscaler): the field keeps an
//! owner and its value, and the autoscaler writes it from then on (through the scale
//! subresource). Without autoscaling, the operator's forced apply takes the field back.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use nixcache_crds::NixCache;

use super::children::apply;
use crate::context::Context;
use crate::render::{self, Plan, MANAGER};
use crate::{Error, Result};

/// Field manager that keeps `spec.replicas` (at its value then) when autoscaling takes over.
pub const HANDOVER_MANAGER: &str = "nixcache-operator-handover";

/// Applies the Deployment for `plan`, handing `spec.replicas` over first if autoscaling is on
/// and the operator still owns it.
pub async fn apply_deployment(ctx: &Context, nc: &NixCache, plan: &Plan) -> Result<Deployment> {
    let deployment = render::deployment(nc, plan);
    // Only when an autoscaler is really made (a cluster without autoscaling/v2 keeps
    // spec.replicas applied by the operator, so there is nothing to hand over).
    if plan.autoscaled(nc) {
        hand_over_replicas(ctx, nc).await?;
    }
    apply(ctx, nc, &deployment).await
}

async fn hand_over_replicas(ctx: &Context, nc: &NixCache) -> Result<()> {
    let ns = nc
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(nc.name_any()))?;
    let name = nc.name_any();
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let current = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("read Deployment {ns}/{name}"), e))?;
    // A Deployment the operator creates without the field needs no handover.
    let Some(current) = current.filter(|d| applies_replicas(d, MANAGER)) else {
        return Ok(());
    };
    let Some(replicas) = current.spec.as_ref().and_then(|s| s.replicas) else {
        return Ok(());
    };
    let patch = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas},
    });
    // Not forced: the value is the current one, so only a change since the read conflicts (and
    // the reconciliation is retried) rather than undoing it.
    api.patch(
        &name,
        &PatchParams::apply(HANDOVER_MANAGER),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| Error::kube(format!("hand spec.replicas of Deployment {ns}/{name} over"), e))?;
    tracing::info!(deployment = %name, replicas, "handed spec.replicas over to the autoscaler");
    Ok(())
}

/// Whether `manager`'s server-side apply of `deployment` sets `spec.replicas` (its managed fields).
pub fn applies_replicas(deployment: &Deployment, manager: &str) -> bool {
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.manager.as_deref() == Some(manager))
        .filter(|entry| entry.operation.as_deref() == Some("Apply"))
        .filter(|entry| entry.subresource.as_deref().unwrap_or_default().is_empty())
        .filter_map(|entry| entry.fields_v1.as_ref())
        .any(|fields| {
            fields
                .0
                .get("f:spec")
                .and_then(|spec| spec.get("f:replicas"))
                .is_some()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(managed_fields: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "demo", "managedFields": managed_fields},
        }))
        .unwrap()
    }

    #[test]
    fn only_an_apply_of_spec_replicas_by_the_manager_counts() {
        let entry = |manager: &str, operation: &str, fields: serde_json::Value| {
            serde_json::json!({"manager": manager, "operation": operation, "apiVersion": "apps/v1",
                               "fieldsType": "FieldsV1", "fieldsV1": fields})
        };
        let replicas = serde_json::json!({"f:spec": {"f:replicas": {}, "f:template": {}}});
        let template = serde_json::json!({"f:spec": {"f:template": {}}});
        let owns = deployment(serde_json::json!([entry(MANAGER, "Apply", replicas.clone())]));
        assert!(applies_replicas(&owns, MANAGER));
        let handed_over = deployment(serde_json::json!([
            entry(MANAGER, "Apply", template),
            entry(HANDOVER_MANAGER, "Apply", replicas.clone()),
        ]));
        assert!(!applies_replicas(&handed_over, MANAGER));
        assert!(applies_replicas(&handed_over, HANDOVER_MANAGER));
        let updated = deployment(serde_json::json!([entry(MANAGER, "Update", replicas)]));
        assert!(!applies_replicas(&updated, MANAGER));
        assert!(!applies_replicas(&deployment(serde_json::Value::Null), MANAGER));
    }
}
