//! The kube-rs Controller: watches NixCaches, the children it owns, and the Secrets they name.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use nixcache_crds::NixCache;

use crate::context::Context;
use crate::reconcile::{error_policy, reconcile, secrets::referenced_secret_names};
use crate::render::MANAGED_BY;

/// Where the controller watches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (needs a ClusterRole).
    #[default]
    Cluster,
    /// One namespace (a Role there is enough).
    Namespace(String),
}

fn api<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match scope {
        Scope::Cluster => Api::all(client.clone()),
        Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
    }
}

/// Runs the controller until `shutdown` resolves; reconciliations under way are finished first.
pub async fn run(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let owned = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    let controller = Controller::new(
        api::<NixCache>(&client, &scope),
        watcher::Config::default().any_semantic(),
    );
    let store = controller.store();
    controller
        .owns(api::<Deployment>(&client, &scope), owned.clone())
        .owns(api::<Service>(&client, &scope), owned.clone())
        .owns(api::<Job>(&client, &scope), owned.clone())
        .owns(api::<CronJob>(&client, &scope), owned.clone())
        .owns(api::<HorizontalPodAutoscaler>(&client, &scope), owned.clone())
        .owns(api::<PodDisruptionBudget>(&client, &scope), owned)
        .watches(
            api::<Secret>(&client, &scope),
            watcher::Config::default(),
            move |secret| users_of(&store, &secret),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(nixcache = %object, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile attempt failed"),
            }
        })
        .await;
}

/// The NixCaches in `secret`'s namespace that read it (so a changed or newly created Secret
/// rolls their pods or unblocks them).
pub fn users_of(store: &Store<NixCache>, secret: &Secret) -> Vec<ObjectRef<NixCache>> {
    let ns = secret.namespace();
    let name = secret.name_any();
    store
        .state()
        .iter()
        .filter(|nc| nc.namespace() == ns && referenced_secret_names(nc).contains(&name))
        .map(|nc| ObjectRef::from_obj(nc.as_ref()))
        .collect()
}
