//! The migration Job: one per image and database (its name says which migration it is).
//!
//! A Job's pod template cannot be changed, so a Job whose template no longer matches the spec
//! (a toleration, pull secret or service account changed) is never re-applied: if it succeeded,
//! that image and database are migrated and it is left alone; if it runs or failed, it is deleted
//! and created again. Once the current Job succeeded and the Deployment moved on, every other
//! migration Job of the NixCache is deleted.

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use nixcache_crds::NixCache;

use super::children::{apply, delete_child, job_outcome, JobOutcome};
use crate::blocker::Blocker;
use crate::context::Context;
use crate::render::{self, Plan, TEMPLATE_HASH_ANNOTATION};
use crate::status::Migration;
use crate::{Error, Result};

/// Brings the migration Job for the plan (none for SQLite) up to date and reads its outcome.
pub async fn migrate(nc: &NixCache, ctx: &Context, plan: &Plan) -> Result<Result<Migration, Blocker>> {
    let Some(job) = render::migrate_job(nc, plan) else {
        return Ok(Ok(Migration::NotNeeded));
    };
    let name = job.name_any();
    let api = jobs(ctx, nc)?;
    let existing = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("read Job {}/{name}", api_namespace(nc)), e))?;
    let current = match existing {
        None => Some(apply(ctx, nc, &job).await?),
        // Deleted (below, in an earlier reconciliation) and not gone yet: its deletion is watched.
        Some(old) if old.metadata.deletion_timestamp.is_some() => None,
        Some(old) if template_hash(&old) == template_hash(&job) => Some(apply(ctx, nc, &job).await?),
        // Migrated for this image and database, whatever its pods looked like.
        Some(old) if job_outcome(&old) == JobOutcome::Succeeded => Some(old),
        // Made by an earlier operator version (no template hash yet), still running: the same
        // migration (the name covers image and database), so let it finish rather than start a
        // second one beside it.
        Some(old) if template_hash(&old).is_none() && job_outcome(&old) == JobOutcome::Running => Some(old),
        Some(_) => replace(ctx, nc, &api, &job).await?,
    };
    Ok(match current {
        Some(current) => outcome(nc, plan, &current),
        None => Ok(Migration::Running {
            job: name,
            image: plan.image.clone(),
        }),
    })
}

/// Deletes the Job of the same name (it runs or failed with another pod template) and creates
/// `job`; `None` while the old one is still there (something holds it, e.g. a finalizer).
async fn replace(ctx: &Context, nc: &NixCache, api: &Api<Job>, job: &Job) -> Result<Option<Job>> {
    let name = job.name_any();
    let why = "its pod template changed before it succeeded (a Job's template cannot be changed), so it is created again";
    delete_child::<Job>(ctx, nc, &name, why).await?;
    let left = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("read Job {}/{name}", api_namespace(nc)), e))?;
    match left {
        Some(_) => Ok(None),
        None => Ok(Some(apply(ctx, nc, job).await?)),
    }
}

fn template_hash(job: &Job) -> Option<&str> {
    job.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TEMPLATE_HASH_ANNOTATION))
        .map(String::as_str)
}

fn outcome(nc: &NixCache, plan: &Plan, job: &Job) -> Result<Migration, Blocker> {
    let name = job.name_any();
    match job_outcome(job) {
        JobOutcome::Running => Ok(Migration::Running {
            job: name,
            image: plan.image.clone(),
        }),
        JobOutcome::Succeeded => Ok(Migration::Succeeded(name)),
        JobOutcome::Failed { reason, message } => Err(Blocker::new(
            "MigrationFailed",
            format!(
                "migration Job {name} for {} failed ({reason}: {message}); the replicas keep their previous image. \
                 Read `kubectl -n {} logs job/{name}`, fix the database (spec.database.urlSecretRef) or the image, \
                 then delete the Job to retry",
                plan.image,
                api_namespace(nc)
            ),
        )),
    }
}

/// After the Deployment was applied: deletes the migration Jobs of `nc` but the current one
/// (older images and databases, failed attempts). Only after a change that can leave such Jobs:
/// a migration Job other than the one the status records (a new image, or a database URL changed
/// in its Secret), or a new spec (which may need no migration any more).
pub async fn delete_superseded(
    nc: &NixCache,
    ctx: &Context,
    migration: Option<&Migration>,
    spec_changed: bool,
) -> Result<()> {
    let recorded = nc.status.as_ref().and_then(|s| s.migration_job.as_deref());
    let (keep, new_job) = match migration {
        Some(Migration::Succeeded(job)) => (Some(job.as_str()), recorded != Some(job.as_str())),
        Some(Migration::NotNeeded) => (None, false),
        _ => return Ok(()),
    };
    if !new_job && !spec_changed {
        return Ok(());
    }
    let api = jobs(ctx, nc)?;
    let params = ListParams::default().labels(&render::migrate_job_selector(nc));
    let listed = api
        .list(&params)
        .await
        .map_err(|e| Error::kube(format!("list the migration Jobs in {}", api_namespace(nc)), e))?;
    let why = "a newer migration succeeded and the replicas moved on";
    for job in listed.items.iter().filter(|job| superseded(nc, job, keep)) {
        delete_child::<Job>(ctx, nc, &job.name_any(), why).await?;
    }
    Ok(())
}

/// A Job of `nc` (by owner, not only by label), not `keep`, not already being deleted.
fn superseded(nc: &NixCache, job: &Job, keep: Option<&str>) -> bool {
    let owned = job
        .owner_references()
        .iter()
        .any(|owner| owner.controller == Some(true) && Some(&owner.uid) == nc.metadata.uid.as_ref());
    owned && job.metadata.deletion_timestamp.is_none() && keep != Some(job.name_any().as_str())
}

fn jobs(ctx: &Context, nc: &NixCache) -> Result<Api<Job>> {
    let ns = nc
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(nc.name_any()))?;
    Ok(Api::namespaced(ctx.client.clone(), &ns))
}

fn api_namespace(nc: &NixCache) -> String {
    nc.namespace().unwrap_or_default()
}
