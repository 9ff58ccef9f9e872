//! Applying children with server-side apply, deleting the ones the spec no longer wants, and
//! reading the migration Job's outcome.

use std::fmt::Debug;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use nixcache_crds::NixCache;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::events;
use crate::context::Context;
use crate::error::api_code;
use crate::render::MANAGER;
use crate::{Error, Result};

/// Applies `object` (server-side apply, field manager `nixcache-operator`, conflicts forced) and
/// returns it as stored. Publishes a `Created` event when the apply created it, which is also
/// how a child deleted by hand shows up when it is put back.
pub async fn apply<K>(ctx: &Context, nc: &NixCache, object: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let name = object.name_any();
    let kind = K::kind(&());
    let ns = nc
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(nc.name_any()))?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let params = PatchParams::apply(MANAGER).force();
    let stored = api
        .patch(&name, &params, &Patch::Apply(object))
        .await
        .map_err(|e| Error::kube(format!("apply {kind} {ns}/{name}"), e))?;
    if created_by_this_apply(stored.meta()) {
        tracing::info!(%kind, %name, "created");
        let note = format!("created {kind} {name}");
        events::publish(ctx, nc, EventType::Normal, "Created", "Apply", note).await;
    }
    Ok(stored)
}

/// True when our apply entry was written in the same second the object was created: the apply
/// created it. (An apply that changes nothing keeps the entry's time; one that changes our
/// fields moves it past the creation time.)
pub fn created_by_this_apply(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    let Some(created) = &meta.creation_timestamp else {
        return false;
    };
    meta.managed_fields.iter().flatten().any(|entry| {
        entry.manager.as_deref() == Some(MANAGER)
            && entry.operation.as_deref() == Some("Apply")
            && entry.time.as_ref() == Some(created)
    })
}

/// Deletes the child `name` of kind `K` if it exists (a spec field that wanted it was removed).
pub async fn delete_if_present<K>(ctx: &Context, nc: &NixCache, name: &str) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let kind = K::kind(&());
    let ns = nc
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(nc.name_any()))?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {
            tracing::info!(%kind, %name, "deleted");
            let note = format!("deleted {kind} {name}: the spec no longer asks for it");
            events::publish(ctx, nc, EventType::Normal, "Deleted", "Delete", note).await;
            Ok(())
        }
        Err(e) if api_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(Error::kube(format!("delete {kind} {ns}/{name}"), e)),
    }
}

/// How a migration Job ended, if it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// Still running (or not started yet).
    Running,
    /// Completed successfully.
    Succeeded,
    /// Failed: the Job's `Failed` condition reason and message.
    Failed {
        /// E.g. `BackoffLimitExceeded`, `DeadlineExceeded`.
        reason: String,
        /// The Job controller's message.
        message: String,
    },
}

/// The outcome of `job` from its status conditions (`Complete`/`Failed`) and counters.
pub fn job_outcome(job: &Job) -> JobOutcome {
    let Some(status) = &job.status else {
        return JobOutcome::Running;
    };
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let is_true = |type_: &str| conditions.iter().find(|c| c.type_ == type_ && c.status == "True");
    if let Some(failed) = is_true("Failed") {
        return JobOutcome::Failed {
            reason: failed.reason.clone().unwrap_or_else(|| "Failed".into()),
            message: failed.message.clone().unwrap_or_default(),
        };
    }
    if is_true("Complete").is_some() || status.succeeded.unwrap_or(0) > 0 {
        return JobOutcome::Succeeded;
    }
    JobOutcome::Running
}
