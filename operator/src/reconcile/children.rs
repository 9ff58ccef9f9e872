//! Applying children with server-side apply (the data claim's refusals reported, not retried),
//! deleting the ones the spec no longer wants, and reading the migration Job's outcome.

use std::fmt::Debug;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::client::Body;
use kube::core::Status;
use kube::runtime::events::EventType;
use kube::{Client, Resource, ResourceExt};
use nixcache_crds::NixCache;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::events;
use crate::blocker::Blocker;
use crate::context::Context;
use crate::error::api_code;
use crate::render::MANAGER;
use crate::{Error, Result};

/// Applies `object` (server-side apply, field manager `nixcache-operator`, conflicts forced) and
/// returns it as stored. Publishes a `Created` event when the apply created it.
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
    let (stored, created) = server_side_apply(&ctx.client, &api, &name, object)
        .await
        .map_err(|e| Error::kube(format!("apply {kind} {ns}/{name}"), e))?;
    if created {
        tracing::info!(%kind, %name, "created");
        let note = format!("created {kind} {name}");
        let child = Some(stored.object_ref(&()));
        events::publish_about(ctx, nc, child, EventType::Normal, "Created", "Apply", note).await;
    }
    Ok(stored)
}

/// A server-side apply that also tells whether it created the object (`201 Created`), which is
/// how a child deleted by hand shows up when it is put back. `Api::patch` hides the status code.
async fn server_side_apply<K>(
    client: &Client,
    api: &Api<K>,
    name: &str,
    object: &K,
) -> kube::Result<(K, bool)>
where
    K: Resource + Serialize + DeserializeOwned,
{
    let params = PatchParams::apply(MANAGER).force();
    let request = kube::core::Request::new(api.resource_url())
        .patch(name, &params, &Patch::Apply(object))
        .map_err(kube::Error::BuildRequest)?;
    let response = client.send(request.map(Body::from)).await?;
    let code = response.status();
    let bytes = response.into_body().collect_bytes().await?;
    if code.is_client_error() || code.is_server_error() {
        let status = serde_json::from_slice::<Status>(&bytes).unwrap_or_else(|_| {
            Status::failure(&String::from_utf8_lossy(&bytes), "Unknown").with_code(code.as_u16())
        });
        return Err(kube::Error::Api(status.boxed()));
    }
    let stored = serde_json::from_slice(&bytes).map_err(kube::Error::SerdeError)?;
    Ok((stored, code == http::StatusCode::CREATED))
}

/// Deletes the child `name` of kind `K` if it exists (a spec field that wanted it was removed).
pub async fn delete_if_present<K>(ctx: &Context, nc: &NixCache, name: &str) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    delete_child::<K>(ctx, nc, name, "the spec no longer asks for it").await
}

/// Deletes the child `name` of kind `K` if it exists (background propagation: what it owns, such
/// as a Job's pods, goes after it); `why` ends the `Deleted` event's note.
pub async fn delete_child<K>(ctx: &Context, nc: &NixCache, name: &str, why: &str) -> Result<()>
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
            let note = format!("deleted {kind} {name}: {why}");
            let child = k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some(K::api_version(&()).into_owned()),
                kind: Some(kind.clone().into_owned()),
                name: Some(name.to_owned()),
                namespace: Some(ns.clone()),
                ..Default::default()
            };
            events::publish_about(ctx, nc, Some(child), EventType::Normal, "Deleted", "Delete", note).await;
            Ok(())
        }
        Err(e) if api_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(Error::kube(format!("delete {kind} {ns}/{name}"), e)),
    }
}

/// Applies the data claim. A change the API server refuses is reported, not retried: a claim
/// cannot shrink or change its storage class (422), nor grow where its storage class does not
/// allow it (403). The migration and the Deployment, which mount the claim as it is, go ahead.
pub async fn apply_claim(
    ctx: &Context,
    nc: &NixCache,
    claim: &PersistentVolumeClaim,
) -> Result<Option<Blocker>> {
    let error = match apply(ctx, nc, claim).await {
        Ok(_) => return Ok(None),
        Err(error) => error,
    };
    let refusal = match &error {
        Error::Kube {
            source: kube::Error::Api(status),
            ..
        } if matches!(status.code, 403 | 422) => one_line(&status.message),
        _ => return Err(error),
    };
    let name = claim.name_any();
    Ok(Some(Blocker::new(
        "VolumeClaimNotUpdated",
        format!(
            "the API server refused PersistentVolumeClaim {name}: {refusal}. The replicas keep the claim as it is; \
             a claim cannot shrink or change its storage class, so restore spec.storage.persistentVolumeClaim \
             (or move the data to a new claim and name it in claimName)"
        ),
    )))
}

/// An API message in one line of at most 300 characters (cut on a character boundary): its
/// first line and the further errors of a list, without the object dumps between them. A
/// server-side apply gets `X is invalid: [spec: Forbidden: …\n  core.PersistentVolumeClaimSpec{…}\n
/// , spec.resources…: Forbidden: …]`, kubectl shows `X is invalid: \n* spec: …\n  …\n* …`.
pub(super) fn one_line(message: &str) -> String {
    const MAX: usize = 300;
    let mut lines = message.lines();
    let mut parts = vec![lines.next().unwrap_or_default().trim().to_owned()];
    let more = lines.filter_map(|l| l.strip_prefix(", ").or_else(|| l.strip_prefix("* ")));
    parts.extend(more.map(|l| l.trim().to_owned()));
    let line = match parts.split_first() {
        Some((first, errors)) if !errors.is_empty() => {
            // `X is invalid:` introduces the list; otherwise the first line is its first error.
            let glue = if first.ends_with(':') { " " } else { "; " };
            format!("{first}{glue}{}", errors.join("; "))
        }
        _ => parts.concat(),
    };
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
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

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn an_api_message_is_cut_to_one_short_line() {
        assert_eq!(
            one_line("  field is immutable\nmore detail"),
            "field is immutable"
        );
        // As kube-apiserver 1.20 refuses a smaller claim.
        let refused = "The PersistentVolumeClaim \"demo-data\" is invalid: \n\
            * spec: Forbidden: spec is immutable after creation except resources.requests for bound claims\n  \
            core.PersistentVolumeClaimSpec{\n  \tAccessModes: {\"ReadWriteOnce\"},\n  }\n\n\
            * spec.resources.requests.storage: Forbidden: field can not be less than previous value";
        let applied = "PersistentVolumeClaim \"demo-data\" is invalid: [spec: Forbidden: spec is immutable \
            after creation except resources.requests for bound claims\n  core.PersistentVolumeClaimSpec{\n\
            - \t\tRequests: core.ResourceList{\n  }\n\
            , spec.resources.requests.storage: Forbidden: field can not be less than previous value]";
        assert_eq!(
            one_line(applied),
            "PersistentVolumeClaim \"demo-data\" is invalid: [spec: Forbidden: spec is immutable after \
             creation except resources.requests for bound claims; spec.resources.requests.storage: Forbidden: \
             field can not be less than previous value]"
        );
        assert_eq!(
            one_line(refused),
            "The PersistentVolumeClaim \"demo-data\" is invalid: spec: Forbidden: spec is immutable after \
             creation except resources.requests for bound claims; spec.resources.requests.storage: Forbidden: \
             field can not be less than previous value"
        );
        let long = "é".repeat(400);
        let cut = one_line(&long);
        assert_eq!(cut.chars().count(), 301);
        assert!(cut.ends_with('…'));
    }
}
