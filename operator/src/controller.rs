//! The kube-rs Controller: watches NixCaches, the children it owns, and the Secrets they name.
//!
//! kube-runtime merges every trigger watch into one stream behind one backoff: a single watch
//! that fails (403 for a missing grant, 404 for an API the cluster lacks) would pause them all,
//! spec edits included. So each watch here runs with its own backoff, its errors are logged
//! (warn, at most once a minute per watch), counted (`nixcache_operator_watch_errors_total`)
//! and recorded for `/readyz` ([`crate::health`]), and never reach the shared stream.
//!
//! Children are watched as metadata only (all the controller needs is their owner), and so are
//! Secrets (a cluster's Helm release Secrets alone can be hundreds of MiB; the reconciler GETs
//! the few it reads). Children whose API the cluster does not serve are not watched
//! ([`crate::capabilities`]).
//!
//! A NixCache event whose only change is `status.cache` (the status poller writes it every
//! minute, [`crate::cache_status`]) does not start a reconciliation: the NixCache stream is
//! filtered by [`reconciled_fields`] (the store behind it still sees every change).

use std::fmt::Debug;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::NamespaceResourceScope;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self as runtime, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::DefaultBackoff;
use kube::runtime::{watcher, PredicateConfig, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use nixcache_crds::NixCache;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::capabilities::OptionalApi;
use crate::context::Context;
use crate::health::NIXCACHE_WATCH;
use crate::reconcile::{error_policy, reconcile_bounded, secrets::referenced_secret_names};
use crate::render::MANAGED_BY;

/// Pause after a watch error should the backoff policy ever run out (kube's never does).
const MAX_WATCH_BACKOFF: Duration = Duration::from_secs(30);

/// Where the controller watches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (needs a ClusterRole).
    #[default]
    Cluster,
    /// One namespace (a Role there is enough).
    Namespace(String),
}

/// `K` in `scope`.
pub(crate) fn api<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    match scope {
        Scope::Cluster => Api::all(client.clone()),
        Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
    }
}

/// Runs the controller until `shutdown` resolves; reconciliations under way are finished first.
/// Watches the optional children that `ctx.capabilities()` says the cluster serves.
pub async fn run(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    ctx.health.controller_started();
    let capabilities = ctx.capabilities();
    let (store, writer) = reflector::store();
    let nixcaches = watcher(
        api::<NixCache>(&ctx.client, &scope),
        watcher::Config::default().any_semantic(),
    );
    let nixcaches = supervised(&ctx, NIXCACHE_WATCH.into(), nixcaches)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(reconciled_fields, PredicateConfig::default());
    let mut controller = Controller::for_stream(nixcaches, store.clone())
        .owns_stream(owned::<Deployment>(&ctx, &scope))
        .owns_stream(owned::<Service>(&ctx, &scope))
        .owns_stream(owned::<Job>(&ctx, &scope));
    if capabilities.serves(OptionalApi::CronJob) {
        controller = controller.owns_stream(owned::<CronJob>(&ctx, &scope));
    }
    if capabilities.serves(OptionalApi::HorizontalPodAutoscaler) {
        controller = controller.owns_stream(owned::<HorizontalPodAutoscaler>(&ctx, &scope));
    }
    if capabilities.serves(OptionalApi::PodDisruptionBudget) {
        controller = controller.owns_stream(owned::<PodDisruptionBudget>(&ctx, &scope));
    }
    let secrets = watcher(
        api::<PartialObjectMeta<Secret>>(&ctx.client, &scope),
        watcher::Config::default(),
    );
    let secrets = supervised(&ctx, "secrets".into(), secrets).touched_objects();
    controller
        .watches_stream(secrets, move |secret| users_of(&store, &secret))
        .graceful_shutdown_on(shutdown)
        .run(reconcile_bounded, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(nixcache = %object, "reconciled"),
                // Logged at warn by the error policy.
                Err(runtime::Error::ReconcilerFailed(error, object)) => {
                    tracing::debug!(%error, nixcache = %object, "reconcile attempt failed")
                }
                Err(error) => tracing::warn!(%error, "controller error"),
            }
        })
        .await;
}

/// The metadata of the children of kind `K` that the operator manages.
fn owned<K>(
    ctx: &Arc<Context>,
    scope: &Scope,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let managed = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    let events = watcher(api::<PartialObjectMeta<K>>(&ctx.client, scope), managed);
    supervised(ctx, K::plural(&()).into_owned(), events).touched_objects()
}

/// `events` with a backoff of its own; its errors are logged, counted and recorded for
/// `/readyz`, then dropped (the watcher retries after the backoff), so that they never pause
/// the controller's other watches.
///
/// Not kube's `default_backoff()`: it resets on every `Ok`, and the watcher emits `Ok(Init)`
/// before each list attempt, so a watch refused with 403 was retried every second forever.
/// Here only a delivered object or a complete list resets the backoff.
fn supervised<K>(
    ctx: &Arc<Context>,
    name: String,
    events: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static
where
    K: Send + 'static,
{
    let state = (events.boxed(), DefaultBackoff::default(), ctx.clone(), name);
    futures::stream::unfold(state, |(mut events, mut backoff, ctx, name)| async move {
        loop {
            let event = events.next().await?;
            match note(&ctx, &name, event) {
                Some(event) => {
                    if !matches!(event, Ok(watcher::Event::Init)) {
                        backoff.reset();
                    }
                    return Some((event, (events, backoff, ctx, name)));
                }
                None => {
                    let pause = backoff.next().unwrap_or(MAX_WATCH_BACKOFF);
                    tokio::time::sleep(pause).await;
                }
            }
        }
    })
}

/// Records a watch event in the health state; `None` for an error.
fn note<K>(
    ctx: &Context,
    name: &str,
    event: watcher::Result<watcher::Event<K>>,
) -> Option<watcher::Result<watcher::Event<K>>> {
    let now = Instant::now();
    match &event {
        // A (re)list starts; it has not succeeded yet.
        Ok(watcher::Event::Init) => {}
        Ok(e) => {
            let listed = matches!(e, watcher::Event::InitDone);
            if let Some(failed_for) = ctx.health.watch_ok(name, listed, now) {
                tracing::info!(watch = name, ?failed_for, "watch works again");
            }
        }
        Err(error) => {
            ctx.metrics.watch_failed(name);
            let text = describe(error);
            match ctx.health.watch_failed(name, &text, now) {
                Some(count) => tracing::warn!(
                    watch = name,
                    error = %text,
                    errors = count.0,
                    "watch failing; retrying with backoff (check the operator's RBAC if this is Forbidden)"
                ),
                None => tracing::debug!(watch = name, error = %text, "watch failing"),
            }
            return None;
        }
    }
    Some(event)
}

/// One line for a watch error: what failed, and the API server's code, reason and message
/// (not the Debug dump of its whole Status).
fn describe(error: &watcher::Error) -> String {
    let (what, source) = match error {
        watcher::Error::InitialListFailed(e) => ("list", e),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => ("watch", e),
        watcher::Error::WatchError(status) => {
            return format!("watch: {} {}: {}", status.code, status.reason, status.message)
        }
        other => return other.to_string(),
    };
    match source {
        kube::Error::Api(status) => format!("{what}: {} {}: {}", status.code, status.reason, status.message),
        other => format!("{what}: {other}"),
    }
}

/// The NixCaches in `secret`'s namespace that read it (so a changed or newly created Secret
/// rolls their pods or unblocks them).
pub fn users_of(store: &Store<NixCache>, secret: &impl Resource) -> Vec<ObjectRef<NixCache>> {
    let ns = secret.namespace();
    let name = secret.name_any();
    store
        .state()
        .iter()
        .filter(|nc| nc.namespace() == ns && referenced_secret_names(nc).contains(&name))
        .map(|nc| ObjectRef::from_obj(nc.as_ref()))
        .collect()
}

/// A hash of everything in `nc` a reconciliation depends on: all but `status.cache` and what
/// changes with every write (`resourceVersion`, `managedFields`). An event that leaves it as it
/// was (a status poller write) is not reconciled. `None` (never, in practice) lets it through.
pub fn reconciled_fields(nc: &NixCache) -> Option<u64> {
    let mut nc = nc.clone();
    nc.metadata.resource_version = None;
    nc.metadata.managed_fields = None;
    if let Some(status) = &mut nc.status {
        status.cache = None;
    }
    let json = serde_json::to_vec(&nc).ok()?;
    let mut hasher = DefaultHasher::new();
    json.hash(&mut hasher);
    Some(hasher.finish())
}
