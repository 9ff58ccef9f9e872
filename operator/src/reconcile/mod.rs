//! The reconciler: from a NixCache to its children and its status.
//!
//! Order: check the spec → read the referenced Secrets and the signing key (generating it once)
//! → Service (and the data claim: a change the API server refuses is reported, the rest goes on)
//! → migration Job for the image and database; only once it succeeded → Deployment, GC and fsck
//! CronJobs, autoscaler, disruption budget, warm-up CronJob (a problem with it is only a warning),
//! superseded migration Jobs deleted → status and events.

pub mod children;
pub mod events;
pub mod migration;
pub mod replicas;
pub mod secrets;
mod signing_owner;
pub mod validate;
mod warm;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use nixcache_crds::{NixCache, NixCacheStatus};

use self::children::{apply, apply_claim, delete_if_present};
use crate::blocker::Blocker;
use crate::capabilities::{FeatureReport, OptionalApi};
use crate::context::Context;
use crate::render::{self, Plan, MANAGER};
use crate::status::{self, DeploymentSeen, Migration, Observation};
use crate::{Error, Result};

/// How often a NixCache is checked again when nothing happens (children are also watched).
pub const RESYNC: Duration = Duration::from_secs(300);

/// Longest one reconciliation may take. kube's client sets no read timeout, and the controller
/// runs one reconciliation per object at a time: a request hanging on a half-open connection
/// would otherwise stop this NixCache's reconciliations for good.
pub const RECONCILE_TIMEOUT: Duration = Duration::from_secs(120);

/// [`reconcile`], bounded by [`RECONCILE_TIMEOUT`] (what the controller runs).
pub async fn reconcile_bounded(nc: Arc<NixCache>, ctx: Arc<Context>) -> Result<Action> {
    let key = object_key(&nc);
    tokio::time::timeout(RECONCILE_TIMEOUT, reconcile(nc, ctx))
        .await
        .unwrap_or_else(|_| {
            Err(Error::Timeout {
                action: format!("reconcile NixCache {key}"),
                after: RECONCILE_TIMEOUT,
            })
        })
}

/// Reconciles one NixCache (the controller calls this for every change of it or its children).
pub async fn reconcile(nc: Arc<NixCache>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let key = object_key(&nc);
    tracing::debug!(nixcache = %key, "reconciling");
    let seen = match observe(&nc, &ctx).await {
        Ok(seen) => seen,
        Err(error) => {
            record_failure(&nc, &ctx, &error).await;
            return Err(error);
        }
    };
    write_status(&nc, &ctx, &seen).await?;
    ctx.reset_backoff(&key);
    Ok(Action::requeue(RESYNC))
}

/// Best effort (the error is retried anyway): shows the failure on the resource in one line,
/// with the replicas as they are, read again, not as if none ran; if even that read fails, the
/// previous counts stand.
async fn record_failure(nc: &NixCache, ctx: &Context, error: &Error) {
    let message = format!(
        "{}; retrying (check the operator's RBAC and logs if this persists)",
        error.summary()
    );
    let deployment = match current_deployment(nc, ctx).await {
        Ok(read) => DeploymentSeen::from(read),
        Err(read_error) => {
            tracing::debug!(error = %read_error.summary(), "cannot read the Deployment after a failure");
            DeploymentSeen::NotRead
        }
    };
    let seen = Observation {
        failure: Some(Blocker::new(error.metric_label(), message)),
        deployment,
        ..Observation::default()
    };
    if let Err(status_error) = write_status(nc, ctx, &seen).await {
        tracing::debug!(error = %status_error.summary(), "cannot record the failure in the status");
    }
}

/// The controller's error policy: count the failure and retry after an exponential backoff whose
/// base depends on the kind of error.
pub fn error_policy(nc: Arc<NixCache>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error);
    let delay = ctx.next_backoff(&object_key(&nc), error.base_backoff());
    tracing::warn!(
        nixcache = %object_key(&nc), %error, kind = error.metric_label(), retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

fn object_key(nc: &NixCache) -> String {
    format!("{}/{}", nc.namespace().unwrap_or_default(), nc.name_any())
}

fn blocked(blocker: Blocker) -> Observation {
    Observation {
        blocker: Some(blocker),
        ..Observation::default()
    }
}

/// Applies everything the spec asks for, as far as it can, and returns what it saw.
async fn observe(nc: &NixCache, ctx: &Context) -> Result<Observation> {
    if let Err(blocker) = validate::spec(&nc.spec) {
        return Ok(blocked(blocker));
    }
    let inputs = match secrets::read(nc, ctx).await? {
        Ok(inputs) => inputs,
        Err(blocker) => return Ok(blocked(blocker)),
    };
    let capabilities = ctx.capabilities();
    let mut seen = Observation {
        public_key: Some(inputs.public_key),
        features: Some(FeatureReport::new(nc, &capabilities)),
        ..Observation::default()
    };
    let plan =
        Plan::new(nc, &ctx.config, inputs.secrets_hash, inputs.database_hash).with_capabilities(capabilities);
    apply(ctx, nc, &render::service(nc)).await?;
    if let Some(claim) = render::persistent_volume_claim(nc) {
        seen.blocker = apply_claim(ctx, nc, &claim).await?;
    }
    let migration = migration::migrate(nc, ctx, &plan).await?;
    match migration {
        Ok(Migration::Running { .. }) | Err(_) => {
            // The replicas stay on what they run until the migration succeeded.
            seen.deployment = current_deployment(nc, ctx).await?.into();
            seen.blocker = migration.as_ref().err().cloned().or(seen.blocker);
            seen.migration = migration.ok();
            // Checked without applying the CronJob, so Degraded does not flap while a migration
            // runs.
            seen.warning = warm::check(ctx, nc, &plan).await;
            return Ok(seen);
        }
        Ok(done) => seen.migration = Some(done),
    }
    seen.deployment = Some(replicas::apply_deployment(ctx, nc, &plan).await?).into();
    seen.image = Some(plan.image.clone());
    // A warm-up problem is reported (Degraded) but is not a blocker: the generation is applied.
    seen.warning = optional_children(nc, ctx, &plan).await?;
    migration::delete_superseded(nc, ctx, seen.migration.as_ref(), spec_changed(nc)).await?;
    // A refused claim change is part of this generation that did not make it.
    seen.complete = seen.blocker.is_none();
    Ok(seen)
}

async fn current_deployment(nc: &NixCache, ctx: &Context) -> Result<Option<Deployment>> {
    let ns = nc.namespace().unwrap_or_default();
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    api.get_opt(&nc.name_any())
        .await
        .map_err(|e| Error::kube(format!("read Deployment {ns}/{}", nc.name_any()), e))
}

/// The GC and fsck CronJobs, autoscaler, disruption budget and warm-up CronJob: applied when
/// the spec wants them; after a spec change, deleted when it no longer does. A child whose API
/// the cluster does not serve is skipped (the `FeaturesAvailable` condition says so; GC and a
/// repairing fsck then run in the replicas). The warm-up CronJob comes last and a problem with it
/// is returned as a warning, so an invalid `spec.warm` holds back nothing else.
async fn optional_children(nc: &NixCache, ctx: &Context, plan: &Plan) -> Result<Option<Blocker>> {
    let changed = spec_changed(nc);
    let serves = |api| plan.capabilities.serves(api);
    if serves(OptionalApi::CronJob) {
        let storage_cronjobs = [
            (render::gc_cronjob(nc, plan), render::gc_cronjob_name(nc)),
            (render::fsck_cronjob(nc, plan), render::fsck_cronjob_name(nc)),
        ];
        for (cronjob, name) in storage_cronjobs {
            match cronjob {
                Some(cronjob) => drop(apply(ctx, nc, &cronjob).await?),
                None if changed => delete_if_present::<CronJob>(ctx, nc, &name).await?,
                None => {}
            }
        }
    }
    if serves(OptionalApi::HorizontalPodAutoscaler) {
        match render::horizontal_pod_autoscaler(nc) {
            Some(hpa) => drop(apply(ctx, nc, &hpa).await?),
            None if changed => delete_if_present::<HorizontalPodAutoscaler>(ctx, nc, &nc.name_any()).await?,
            None => {}
        }
    }
    if serves(OptionalApi::PodDisruptionBudget) {
        match render::pod_disruption_budget(nc) {
            Some(pdb) => drop(apply(ctx, nc, &pdb).await?),
            None if changed => delete_if_present::<PodDisruptionBudget>(ctx, nc, &nc.name_any()).await?,
            None => {}
        }
    }
    if serves(OptionalApi::CronJob) {
        warm::reconcile(ctx, nc, plan, changed).await
    } else {
        Ok(warm::check(ctx, nc, plan).await)
    }
}

/// True until the status says every child of the current generation was applied (a blocked
/// generation is observed, not applied): until then a child the spec no longer wants may exist.
fn spec_changed(nc: &NixCache) -> bool {
    !status::children_applied(nc.status.as_ref(), nc.metadata.generation)
}

/// Writes the status computed from `seen` (unless it is unchanged) and publishes an event for
/// every condition that changed.
async fn write_status(nc: &NixCache, ctx: &Context, seen: &Observation) -> Result<()> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let new = status::status(nc, seen, &now);
    let old = nc.status.clone().unwrap_or_default();
    // `status.cache` is the status poller's: not compared, and left out of this apply.
    let unchanged = nc.status.as_ref().is_some_and(|s| {
        NixCacheStatus {
            cache: None,
            ..s.clone()
        } == new
    });
    if unchanged {
        return Ok(());
    }
    let ns = nc.namespace().unwrap_or_default();
    let api: Api<NixCache> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({
        "apiVersion": "nixcache.dev/v1alpha1",
        "kind": "NixCache",
        "status": new,
    });
    api.patch_status(
        &nc.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| Error::kube(format!("write the status of NixCache {ns}/{}", nc.name_any()), e))?;
    events::condition_changes(ctx, nc, &old, &new).await;
    Ok(())
}
