//! The CronJob running `nixcache warm` against the cache's own Service (`spec.warm`).
//!
//! `warm` only sends GETs to the Service, so its pod gets no database URL, no S3 credentials, no
//! service account token, and not the cache's service account: IRSA or Workload Identity
//! webhooks would give it the cache's storage identity (S3 writes) through that account, token
//! mount or not. Its one Secret volume is the credential a private cache asks of it
//! (`spec.warm.credentialSecretRef`).

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{PodTemplateSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use nixcache_crds::{NixCache, Warm};
use nixcache_protocol::{StorePath, StorePathError};

use super::{labels, owned_meta, pod, service_url, warm_cronjob_name, Plan};

/// Longest one run may take before its Job is stopped as failed: a closure of many GiB fits,
/// and a run that hangs does not hold back the next ones (`Forbid`) for long.
pub const WARM_DEADLINE_SECONDS: i64 = 2 * 3600;

/// Pods per run: one, no retry. A path missing upstream fails the run after the rest was
/// fetched, and a retry would walk every closure again for the same failure; the next schedule
/// tries again.
pub const WARM_BACKOFF_LIMIT: i32 = 0;

/// Requests of the warm container: it mostly waits on the cache's answers.
const REQUESTS: [(&str, &str); 2] = [("cpu", "10m"), ("memory", "32Mi")];
/// Its memory limit: NAR bodies are counted and dropped as they stream, so memory grows with
/// the closures' narinfos and the requests at once, not with the NARs' size.
const MEMORY_LIMIT: &str = "256Mi";

/// The range `nixcache warm --concurrency` accepts.
const CONCURRENCY: std::ops::RangeInclusive<i32> = 1..=256;

/// Why `spec.warm` cannot be rendered. The CRD's schema rejects the same at the API server;
/// this catches a NixCache stored before the rule existed (or with validation off), and the
/// names Nix reserves (`.-foo`), which the schema's pattern lets through.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidWarm {
    /// `paths` is empty (`nixcache warm` needs at least one).
    #[error("spec.warm.paths is empty: list at least one store path, or remove spec.warm")]
    NoPaths,
    /// An entry of `paths` is not a store path.
    #[error(
        "spec.warm.paths[{index}] {path:?} is not a store path: {source} \
         (expected /nix/store/<32-character nixbase32 hash>-<name>)"
    )]
    Path {
        /// Its position in `paths`.
        index: usize,
        /// The entry as written.
        path: String,
        /// What is wrong with it.
        #[source]
        source: StorePathError,
    },
    /// `concurrency` is outside 1..=256.
    #[error("spec.warm.concurrency {0} is outside 1..=256")]
    Concurrency(i32),
    /// The cache is private and the warm-up has no credential: every run would get 401.
    #[error(
        "spec.private is set and spec.warm.credentialSecretRef is not: a warm-up needs a \
         credential of the private cache (user:password or a token)"
    )]
    NoCredential,
}

/// Where the warm-up's credential is mounted.
const CREDENTIAL_DIR: &str = "/etc/nixcache/warm";
/// The key of `spec.warm.credentialSecretRef`'s Secret unless it names another.
pub const WARM_CREDENTIAL_KEY: &str = "credential";

/// The warm-up CronJob, `Ok(None)` when `warm` is unset, or what is wrong with `warm`.
pub fn warm_cronjob(nc: &NixCache, plan: &Plan) -> Result<Option<CronJob>, InvalidWarm> {
    let Some(warm) = nc.spec.warm.as_ref() else {
        return Ok(None);
    };
    let mut container = pod::container(nc, plan, "warm", warm_args(nc, warm)?);
    container.env = Some(pod::base_env());
    container.resources = Some(resources());
    let credential = warm.credential_secret_ref.as_ref().map(|r| {
        pod::secret_file(
            "warm-credential",
            r,
            WARM_CREDENTIAL_KEY,
            "credential",
            CREDENTIAL_DIR,
        )
    });
    container.volume_mounts = credential.as_ref().map(|(_, mount)| vec![mount.clone()]);
    let mut spec = pod::pod_spec(nc, vec![container], Vec::new());
    spec.volumes = credential.map(|(volume, _)| vec![volume]);
    // The namespace's default account (see the module's comment); the pull secrets stay.
    spec.service_account_name = None;
    spec.automount_service_account_token = Some(false);
    spec.restart_policy = Some("Never".into());
    let template_meta = || ObjectMeta {
        labels: Some(labels(nc, "warm")),
        ..ObjectMeta::default()
    };
    Ok(Some(CronJob {
        metadata: owned_meta(nc, warm_cronjob_name(nc), "warm"),
        spec: Some(CronJobSpec {
            schedule: warm.schedule.clone(),
            time_zone: warm.time_zone.clone(),
            concurrency_policy: Some("Forbid".into()),
            starting_deadline_seconds: Some(3600),
            successful_jobs_history_limit: Some(1),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(template_meta()),
                spec: Some(JobSpec {
                    backoff_limit: Some(WARM_BACKOFF_LIMIT),
                    active_deadline_seconds: Some(WARM_DEADLINE_SECONDS),
                    template: PodTemplateSpec {
                        metadata: Some(template_meta()),
                        spec: Some(spec),
                    },
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        }),
        status: None,
    }))
}

/// Small and fixed: `spec.resources` is sized for `serve`, not for this client.
fn resources() -> ResourceRequirements {
    let quantities = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(name, value)| ((*name).to_owned(), Quantity((*value).to_owned())))
            .collect()
    };
    ResourceRequirements {
        requests: Some(quantities(&REQUESTS)),
        limits: Some(quantities(&[("memory", MEMORY_LIMIT)])),
        ..ResourceRequirements::default()
    }
}

/// `warm --url <the Service> [--concurrency N] [--narinfos-only] PATH…`, every path checked.
fn warm_args(nc: &NixCache, warm: &Warm) -> Result<Vec<String>, InvalidWarm> {
    if warm.paths.is_empty() {
        return Err(InvalidWarm::NoPaths);
    }
    let mut args = vec!["warm".to_owned(), "--url".to_owned(), service_url(nc)];
    match (&nc.spec.private, &warm.credential_secret_ref) {
        (Some(_), None) => return Err(InvalidWarm::NoCredential),
        (_, Some(_)) => args.extend(["--auth-file".to_owned(), format!("{CREDENTIAL_DIR}/credential")]),
        (None, None) => {}
    }
    if let Some(n) = warm.concurrency {
        if !CONCURRENCY.contains(&n) {
            return Err(InvalidWarm::Concurrency(n));
        }
        args.extend(["--concurrency".to_owned(), n.to_string()]);
    }
    if warm.narinfos_only {
        args.push("--narinfos-only".into());
    }
    for (index, path) in warm.paths.iter().enumerate() {
        let parsed = StorePath::from_absolute(path).map_err(|source| InvalidWarm::Path {
            index,
            path: path.clone(),
            source,
        })?;
        args.push(parsed.to_absolute());
    }
    Ok(args)
}

#[cfg(test)]
mod tests;
