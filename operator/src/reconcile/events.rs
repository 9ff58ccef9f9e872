//! Events on the NixCache: one per action the operator took, and one per condition change.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};
use kube::Resource;
use nixcache_crds::{NixCache, NixCacheStatus, CONDITION_DEGRADED};

use crate::context::Context;
use crate::text;

/// Longest note of an event, in bytes: the API server rejects a longer one (events.k8s.io/v1),
/// and the event would be lost just when it tells of the worst failures.
pub const NOTE_MAX_BYTES: usize = 1024;

/// Publishes an event on `nc`. A failure is logged, never fails the reconciliation.
pub async fn publish(
    ctx: &Context,
    nc: &NixCache,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    publish_about(ctx, nc, None, type_, reason, action, note).await;
}

/// Publishes an event on `nc` about `child` (its `related` object). Events with the same reason
/// and action on different children stay separate events (the recorder groups by those fields).
/// Every event goes through here: the note is cut to [`NOTE_MAX_BYTES`].
pub async fn publish_about(
    ctx: &Context,
    nc: &NixCache,
    child: Option<ObjectReference>,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(text::bounded(&note, NOTE_MAX_BYTES)),
        action: action.into(),
        secondary: child,
    };
    if let Err(error) = ctx.recorder.publish(&event, &nc.object_ref(&())).await {
        tracing::warn!(%error, reason, "cannot publish an event");
    }
}

/// One event for each condition whose status or reason changed from `old` to `new`: a Warning
/// when something went wrong (Degraded became true, or Ready false with a problem), else Normal.
pub async fn condition_changes(ctx: &Context, nc: &NixCache, old: &NixCacheStatus, new: &NixCacheStatus) {
    let mut reasons_sent: Vec<&str> = Vec::new();
    for c in &new.conditions {
        let before = old.condition(&c.type_);
        if before.is_some_and(|b| b.status == c.status && b.reason == c.reason) {
            continue;
        }
        // Nothing to tell: no problem on a new resource; one event per reason.
        if before.is_none() && c.type_ == CONDITION_DEGRADED && c.status == "False" {
            continue;
        }
        // Ready=False and Progressing=False repeat the Degraded reason; one event is enough.
        let degraded = new
            .condition(CONDITION_DEGRADED)
            .is_some_and(|d| d.status == "True");
        if degraded && c.type_ != CONDITION_DEGRADED && c.status == "False" {
            continue;
        }
        if reasons_sent.contains(&c.reason.as_str()) {
            continue;
        }
        reasons_sent.push(&c.reason);
        let warning = c.type_ == CONDITION_DEGRADED && c.status == "True";
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let note = format!("{}={}: {}", c.type_, c.status, c.message);
        publish(ctx, nc, type_, &c.reason, "UpdateStatus", note).await;
    }
}
