//! The warm-up CronJob (`spec.warm`). Warm-up is an optimisation, so a problem with it is a
//! warning (`Degraded=True, InvalidSpec`), never a blocker: the rest of the generation is applied
//! and `Progressing` follows the rollout. The operator checks the paths when rendering; the
//! schedule and time zone only the API server can check (the CRD's schema knows neither cron
//! syntax nor the zone database), so its refusal of the CronJob is reported the same way rather
//! than retried: the same spec would be refused again.

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use nixcache_crds::NixCache;

use super::children::{apply, delete_if_present, one_line};
use crate::blocker::Blocker;
use crate::context::Context;
use crate::render::{self, InvalidWarm, Plan};
use crate::{Error, Result};

/// The condition reason of a warm-up problem, as for the rest of an invalid spec.
const REASON: &str = "InvalidSpec";

/// Ends every warning: what the operator does meanwhile.
const MEANWHILE: &str =
    "The warm-up CronJob is left as it is until this is fixed; the rest of the NixCache is applied";

/// The CronJob's fields the API server checks that are copied from `spec.warm`, with their names
/// in the NixCache.
const COPIED_FIELDS: [(&str, &str); 2] = [
    ("spec.schedule", "spec.warm.schedule"),
    ("spec.timeZone", "spec.warm.timeZone"),
];

/// Applies the warm-up CronJob when `spec.warm` asks for it; deletes it when the spec no longer
/// does and `changed` (a spec change since every child was last applied). Returns the warning
/// for an invalid `spec.warm` (the CronJob then stays as it is). Other API errors are returned.
pub(super) async fn reconcile(
    ctx: &Context,
    nc: &NixCache,
    plan: &Plan,
    changed: bool,
) -> Result<Option<Blocker>> {
    let cronjob = match render::warm_cronjob(nc, plan) {
        Ok(Some(cronjob)) => cronjob,
        Ok(None) => {
            if changed {
                delete_if_present::<CronJob>(ctx, nc, &render::warm_cronjob_name(nc)).await?;
            }
            return Ok(None);
        }
        Err(invalid) => return Ok(Some(invalid_warm(&invalid))),
    };
    match apply(ctx, nc, &cronjob).await {
        Ok(_) => Ok(missing_credential(ctx, nc).await),
        Err(error) => refused(error, &render::warm_cronjob_name(nc)).map(Some),
    }
}

/// The warning for a `spec.warm.credentialSecretRef` whose Secret (or key) is not there: each run
/// would wait for its volume until its deadline, and skip the next schedules meanwhile. A Secret
/// that cannot be read now is no warning (logged; the next reconcile looks again).
async fn missing_credential(ctx: &Context, nc: &NixCache) -> Option<Blocker> {
    let r = nc.spec.warm.as_ref()?.credential_secret_ref.as_ref()?;
    let ns = nc.namespace()?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = match api.get_opt(&r.name).await {
        Ok(secret) => secret,
        Err(error) => {
            tracing::warn!(%error, secret = %r.name, "cannot read the warm-up's credential Secret");
            return None;
        }
    };
    let key = r.key_or(render::WARM_CREDENTIAL_KEY);
    let missing = match secret {
        None => format!("Secret {ns}/{} does not exist", r.name),
        Some(s) if !s.data.as_ref().is_some_and(|d| d.contains_key(key)) => {
            format!("Secret {ns}/{} has no key {key}", r.name)
        }
        Some(_) => return None,
    };
    let message = format!(
        "spec.warm.credentialSecretRef: {missing}; each warm-up run would wait for it until its \
         deadline. The rest of the NixCache is applied"
    );
    Some(Blocker::new(REASON, message))
}

/// The warning for an invalid `spec.warm` or a missing credential, without applying anything:
/// where the cluster serves no CronJob (the spec is wrong all the same, better fixed before it
/// does), and while a migration holds the children back.
pub(super) async fn check(ctx: &Context, nc: &NixCache, plan: &Plan) -> Option<Blocker> {
    match render::warm_cronjob(nc, plan) {
        Err(invalid) => Some(invalid_warm(&invalid)),
        Ok(_) => missing_credential(ctx, nc).await,
    }
}

fn invalid_warm(invalid: &InvalidWarm) -> Blocker {
    Blocker::new(REASON, format!("{invalid}. {MEANWHILE}"))
}

/// The warning for the API server's refusal of the CronJob `name`: 422 (a schedule or time zone
/// it cannot parse) or 400 (a request it cannot take, e.g. a field it does not know). Any other
/// error is returned: it is not the spec's fault, and is retried.
fn refused(error: Error, name: &str) -> Result<Blocker> {
    let refusal = match &error {
        Error::Kube {
            source: kube::Error::Api(status),
            ..
        } if matches!(status.code, 400 | 422) => one_line(&status.message),
        _ => return Err(error),
    };
    let fields = named_fields(&refusal);
    let fields = if fields.is_empty() {
        "spec.warm".to_owned()
    } else {
        fields.join(" and ")
    };
    let message =
        format!("{fields}: the API server refused the warm-up CronJob {name}: {refusal}. {MEANWHILE}");
    Ok(Blocker::new(REASON, message))
}

/// The `spec.warm` fields whose CronJob counterpart the API server's `message` names, as whole
/// field paths (`spec.schedule`, not the `spec.schedulerName` of a pod template).
fn named_fields(message: &str) -> Vec<&'static str> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '_';
    COPIED_FIELDS
        .into_iter()
        .filter(|(cronjob, _)| {
            message.match_indices(cronjob).any(|(at, _)| {
                let before = message[..at].chars().next_back();
                let after = message[at + cronjob.len()..].chars().next();
                !before.is_some_and(is_path_char) && !after.is_some_and(is_path_char)
            })
        })
        .map(|(_, warm)| warm)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::named_fields;

    #[test]
    fn the_api_servers_field_paths_are_named_as_the_nixcaches() {
        // As kube-apiserver refuses a CronJob with a server-side apply.
        let schedule = "CronJob.batch \"demo-warm\" is invalid: spec.schedule: Invalid value: \
                        \"61 * * * *\": End of range (61) above maximum (59): 61";
        assert_eq!(named_fields(schedule), ["spec.warm.schedule"]);
        let both = "CronJob.batch \"demo-warm\" is invalid: [spec.schedule: Invalid value: \"x\": \
                    expected exactly 5 fields, found 1: x, spec.timeZone: Invalid value: \"Mars/Base\": \
                    unknown time zone]";
        assert_eq!(named_fields(both), ["spec.warm.schedule", "spec.warm.timeZone"]);
        let pod =
            "CronJob.batch \"demo-warm\" is invalid: spec.jobTemplate.spec.template.spec.schedulerName: \
                   Invalid value: \"x\"";
        assert!(named_fields(pod).is_empty());
        assert!(named_fields("the body of the request was in an unknown format").is_empty());
    }
}
