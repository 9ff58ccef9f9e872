//! Checks of the invariants the builders rely on. The CRD's CEL rules reject the same specs at
//! the API server; these catch a NixCache stored before a rule existed (or with validation off).

use std::collections::HashMap;

use nixcache_crds::{NixCacheSpec, Pin, MAX_DECLARED_PINS};
use nixcache_protocol::{StorePath, StorePathError};

use crate::blocker::Blocker;
use crate::render;

/// Why `spec.pins` is not passed to `serve`: a path it refuses would keep every new replica from
/// starting, one hash under two names leaves unclear which to pin, and a longer list than the CRD
/// allows the API server would have refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidPins {
    /// More entries than the CRD allows.
    #[error("spec.pins lists {0} paths, at most {MAX_DECLARED_PINS} are allowed: pin the rest by hand (nixcache pin) or over HTTP")]
    TooMany(usize),
    /// An entry is not a store path `serve --pin` takes.
    #[error("spec.pins[{index}].storePath {path:?} is not a store path: {source} (expected /nix/store/<32-character nixbase32 hash>-<name>)")]
    Path {
        /// Its position in the list.
        index: usize,
        /// The entry as written.
        path: String,
        /// What is wrong with it.
        #[source]
        source: StorePathError,
    },
    /// Two entries name one store path hash (the cache keys pins by hash).
    #[error(
        "spec.pins[{first}] and spec.pins[{second}] both pin the store path hash {hash}: list each path once"
    )]
    Duplicate {
        /// The earlier entry's position.
        first: usize,
        /// The later entry's position.
        second: usize,
        /// The hash they share.
        hash: String,
    },
}

/// `Err` for a list `serve --pin`/`--pin-closure` would refuse, or a path listed twice. The CRD's
/// schema checks the size, the shape and exact repeats; the names Nix reserves (`.-foo`) and one
/// hash under two names only this catches.
pub fn pins(pins: &[Pin]) -> Result<(), InvalidPins> {
    if pins.len() > MAX_DECLARED_PINS as usize {
        return Err(InvalidPins::TooMany(pins.len()));
    }
    let mut seen = HashMap::new();
    for (index, pin) in pins.iter().enumerate() {
        let path = StorePath::from_absolute(&pin.store_path).map_err(|source| InvalidPins::Path {
            index,
            path: pin.store_path.clone(),
            source,
        })?;
        if let Some(first) = seen.insert(*path.hash(), index) {
            return Err(InvalidPins::Duplicate {
                first,
                second: index,
                hash: path.hash().to_string(),
            });
        }
    }
    Ok(())
}

/// `Err` with a message naming the offending field when the spec cannot be rendered.
pub fn spec(spec: &NixCacheSpec) -> Result<(), Blocker> {
    let invalid = |message: &str| Err(Blocker::new("InvalidSpec", message.to_owned()));
    let storage = &spec.storage;
    if storage.s3.is_some() == storage.persistent_volume_claim.is_some() {
        return invalid("set exactly one of spec.storage.s3 and spec.storage.persistentVolumeClaim");
    }
    let database = &spec.database;
    if database.url_secret_ref.is_some() == database.sqlite.is_some() {
        return invalid("set exactly one of spec.database.urlSecretRef and spec.database.sqlite");
    }
    if let Some(volume) = &storage.persistent_volume_claim {
        if volume.claim_name.is_some() == volume.size.is_some() {
            return invalid("set exactly one of spec.storage.persistentVolumeClaim.claimName and .size");
        }
    }
    let single = spec.replicas <= 1 && spec.autoscaling.is_none();
    if database.sqlite.is_some() && storage.persistent_volume_claim.is_none() {
        return invalid(
            "spec.database.sqlite keeps its file on the volume: set spec.storage.persistentVolumeClaim",
        );
    }
    if storage.persistent_volume_claim.is_some() && !single {
        return invalid("spec.storage.persistentVolumeClaim (and spec.database.sqlite) serve one replica only: set spec.replicas to 0 or 1 and remove spec.autoscaling, or use storage.s3 with database.urlSecretRef");
    }
    if storage.persistent_volume_claim.is_some() && spec.fsck.as_ref().is_some_and(|f| !f.repair) {
        return invalid("spec.fsck.repair: false needs spec.storage.s3 (a CronJob that only reports): on spec.storage.persistentVolumeClaim the replica runs fsck itself and always repairs; remove repair or set it to true");
    }
    if let Err(e) = pins(&spec.pins) {
        return Err(Blocker::new("InvalidSpec", e.to_string()));
    }
    if let Err(e) = render::check_s3_serving(spec) {
        return Err(Blocker::new("InvalidSpec", e.to_string()));
    }
    if spec.replicas < 0 {
        return invalid("spec.replicas must not be negative");
    }
    if let Some(a) = &spec.autoscaling {
        if a.min_replicas < 1 || a.min_replicas > a.max_replicas {
            return invalid("spec.autoscaling needs 1 <= minReplicas <= maxReplicas");
        }
    }
    if let Some(p) = &spec.pod_disruption_budget {
        if p.min_available.is_some() == p.max_unavailable.is_some() {
            return invalid("set exactly one of spec.podDisruptionBudget.minAvailable and .maxUnavailable");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fixtures::{self, NixCacheExt, HELLO};

    const GLIBC: &str = "/nix/store/0c0wf1qw0hh0gmgxbbd1k7ligmakdfrn-glibc-2.40-66";

    fn blocker(pins: &[(&str, bool)]) -> Option<String> {
        let nc = fixtures::scaled("demo").with_pins(pins);
        spec(&nc.spec).err().map(|b| {
            assert_eq!(b.reason, "InvalidSpec");
            b.message
        })
    }

    #[test]
    fn store_paths_listed_once_are_valid() {
        assert_eq!(blocker(&[]), None);
        assert_eq!(blocker(&[(HELLO, true), (GLIBC, false)]), None);
        // Leading dots other than the reserved names are store paths too.
        assert_eq!(
            blocker(&[("/nix/store/0c0wf1qw0hh0gmgxbbd1k7ligmakdfrn-.foo", true)]),
            None
        );
    }

    #[test]
    fn a_path_serve_would_refuse_is_an_invalid_spec_naming_the_entry() {
        for (bad, says) in [
            ("/nix/store/0c0wf1qw0hh0gmgxbbd1k7ligmakdfrn-.-foo", "reserved"),
            ("/nix/store/0c0wf1qw0hh0gmgxbbd1k7ligmakdfrn-..", "reserved"),
            (
                "/nix/store/0c0wf1qw0hh0gmgxbbd1k7ligmakdfre-glibc",
                "is not valid nixbase32",
            ),
            ("/nix/store/short-glibc", "must be 32 nixbase32 characters, got 5"),
            (
                "/gnu/store/0c0wf1qw0hh0gmgxbbd1k7ligmakdfrn-glibc",
                "is not directly inside /nix/store",
            ),
            (
                "/nix/store/0c0wf1qw0hh0gmgxbbd1k7ligmakdfrn-a,b",
                "invalid character",
            ),
        ] {
            let message = blocker(&[(HELLO, true), (bad, false)]).unwrap();
            assert!(
                message.starts_with(&format!("spec.pins[1].storePath {bad:?} is not a store path: ")),
                "{message}"
            );
            assert!(message.contains(says), "{bad}: {message}");
        }
    }

    #[test]
    fn a_hash_listed_twice_is_an_invalid_spec() {
        let message = blocker(&[(HELLO, true), (GLIBC, true), (HELLO, false)]).unwrap();
        assert_eq!(
            message,
            "spec.pins[0] and spec.pins[2] both pin the store path hash \
             7qxb8wbwqha95lbfrcj97j6fb8wbywa4: list each path once"
        );
        // One hash under another name is the same pin to the cache.
        let renamed = "/nix/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4-hello-2.12.2";
        assert!(blocker(&[(HELLO, true), (renamed, true)])
            .unwrap()
            .contains("spec.pins[0] and spec.pins[1]"));
    }

    #[test]
    fn an_invalid_hot_tier_size_or_redirect_expiry_is_an_invalid_spec() {
        let mut nc = fixtures::scaled("demo");
        assert_eq!(spec(&nc.spec), Ok(()));
        let s3 = nc.spec.storage.s3.as_mut().unwrap();
        s3.hot_tier = Some(nixcache_crds::HotTier {
            enabled: true,
            size: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                "0".into(),
            )),
        });
        let message = "spec.storage.s3.hotTier.size \"0\" must be more than zero bytes";
        assert_eq!(spec(&nc.spec), Err(Blocker::new("InvalidSpec", message.into())));
        let mut nc = fixtures::scaled("demo");
        let s3 = nc.spec.storage.s3.as_mut().unwrap();
        s3.redirect = Some(nixcache_crds::S3Redirect {
            enabled: true,
            expiry: Some("8d".into()),
        });
        let message = "spec.storage.s3.redirect.expiry \"8d\" is outside 1s to 7d (S3 refuses \
                       presigned URLs valid longer than 7 days)";
        assert_eq!(spec(&nc.spec), Err(Blocker::new("InvalidSpec", message.into())));
    }

    #[test]
    fn more_pins_than_the_crd_allows_are_an_invalid_spec() {
        let many: Vec<String> = (0..=MAX_DECLARED_PINS)
            .map(|i| format!("/nix/store/{i:0>32}-p"))
            .collect();
        let pins: Vec<(&str, bool)> = many.iter().map(|p| (p.as_str(), true)).collect();
        let message = blocker(&pins).unwrap();
        assert!(
            message.starts_with("spec.pins lists 1001 paths, at most 1000"),
            "{message}"
        );
        assert_eq!(blocker(&pins[..1000]), None);
    }
}
