//! How replicas on S3 serve NAR hits: from a hot tier on their own disk
//! (`spec.storage.s3.hotTier`, on by default) and by redirecting clients to the bucket
//! (`spec.storage.s3.redirect`, off by default). Neither applies to
//! `storage.persistentVolumeClaim`, whose NARs are on the pod's disk already.

use std::time::Duration;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use nixcache_crds::NixCacheSpec;

use super::pod;
use crate::quantity::{self, QuantityError};

/// Name of the hot tier's emptyDir volume.
pub const HOT_TIER_VOLUME: &str = "hot-tier";
/// Where the hot tier is mounted in the proxy container (`--hot-tier-dir`).
pub const HOT_TIER_DIR: &str = "/var/cache/nixcache-hot";
/// The tier's size without `hotTier.size` or an `ephemeral-storage` request (2 GiB): small
/// enough for most nodes' free disk, large enough for the hot part of a typical closure.
pub const DEFAULT_HOT_TIER_BYTES: u64 = 2 << 30;
/// Lifetime of presigned URLs without `redirect.expiry` (the proxy's own default).
pub const DEFAULT_REDIRECT_EXPIRY: &str = "5m";
/// S3 (SigV4) refuses presigned URLs valid for longer than 7 days.
const MAX_REDIRECT_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
pub(super) const EPHEMERAL_STORAGE: &str = "ephemeral-storage";

/// Why the hot tier or the redirect cannot be rendered, naming the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidS3Serving {
    /// `hotTier.size` is not a positive byte size.
    #[error("spec.storage.s3.hotTier.size {value:?} {source}")]
    HotTierSize {
        /// The size as written.
        value: String,
        /// What is wrong with it.
        #[source]
        source: QuantityError,
    },
    /// The `ephemeral-storage` request that sizes the tier is not a positive byte size.
    #[error(
        "spec.resources.{field}.ephemeral-storage {value:?} {source}; it sizes the hot tier: \
         correct it, or set spec.storage.s3.hotTier.size"
    )]
    EphemeralStorage {
        /// `requests`, or `limits` when only a limit is set.
        field: &'static str,
        /// The quantity as written.
        value: String,
        /// What is wrong with it.
        #[source]
        source: QuantityError,
    },
    /// `redirect.expiry` is not a duration.
    #[error("spec.storage.s3.redirect.expiry {value:?} is not a duration such as 5m or 1h: {reason}")]
    RedirectExpiry {
        /// The expiry as written.
        value: String,
        /// humantime's complaint.
        reason: String,
    },
    /// `redirect.expiry` is under a second or over S3's 7 days.
    #[error(
        "spec.storage.s3.redirect.expiry {0:?} is outside 1s to 7d (S3 refuses presigned URLs \
         valid longer than 7 days)"
    )]
    RedirectExpiryRange(String),
}

/// `Err` naming the field when `hotTier` or `redirect` of an S3 cache cannot be rendered.
pub fn check(spec: &NixCacheSpec) -> Result<(), InvalidS3Serving> {
    hot_tier_bytes(spec)?;
    let Some(s3) = &spec.storage.s3 else {
        return Ok(());
    };
    let Some(expiry) = s3.redirect.as_ref().and_then(|r| r.expiry.as_deref()) else {
        return Ok(());
    };
    let duration = humantime::parse_duration(expiry).map_err(|e| InvalidS3Serving::RedirectExpiry {
        value: expiry.to_owned(),
        reason: e.to_string(),
    })?;
    if duration < Duration::from_secs(1) || duration > MAX_REDIRECT_EXPIRY {
        return Err(InvalidS3Serving::RedirectExpiryRange(expiry.to_owned()));
    }
    Ok(())
}

/// The hot tier's bound in bytes, or `None` without one (not S3, `hotTier.enabled: false`, or
/// `redirect.enabled`):
/// `hotTier.size`, else half the proxy's `ephemeral-storage` request (so the tier leaves the
/// other half to the downloads in progress and the logs), else 2 GiB.
pub fn hot_tier_bytes(spec: &NixCacheSpec) -> Result<Option<u64>, InvalidS3Serving> {
    let Some(s3) = &spec.storage.s3 else {
        return Ok(None);
    };
    let tier = s3.hot_tier.clone().unwrap_or_default();
    // Redirected hits never reach the tier, and the proxy refuses the two together.
    let redirected = s3.redirect.as_ref().is_some_and(|r| r.enabled);
    if !tier.enabled || redirected {
        return Ok(None);
    }
    if let Some(size) = &tier.size {
        let bytes = quantity::bytes(size).map_err(|source| InvalidS3Serving::HotTierSize {
            value: size.0.clone(),
            source,
        })?;
        return Ok(Some(bytes));
    }
    let half = match ephemeral_storage(spec.resources.as_ref()) {
        Some((field, request)) => {
            let bytes = quantity::bytes(request).map_err(|source| InvalidS3Serving::EphemeralStorage {
                field,
                value: request.0.clone(),
                source,
            })?;
            bytes / 2
        }
        None => 0,
    };
    // A request of one byte halves to nothing: then the default, as without a request.
    Ok(Some(if half > 0 { half } else { DEFAULT_HOT_TIER_BYTES }))
}

/// The container's `ephemeral-storage` request, which Kubernetes takes from the limit when only
/// a limit is set; with the field it came from.
fn ephemeral_storage(resources: Option<&ResourceRequirements>) -> Option<(&'static str, &Quantity)> {
    let resources = resources?;
    let request = resources.requests.as_ref().and_then(|r| r.get(EPHEMERAL_STORAGE));
    let limit = resources.limits.as_ref().and_then(|l| l.get(EPHEMERAL_STORAGE));
    request.map(|q| ("requests", q)).or(limit.map(|q| ("limits", q)))
}

/// What the hot tier adds to the proxy's pod.
#[derive(Debug, Clone, PartialEq)]
pub struct HotTierPod {
    /// The emptyDir, with a `sizeLimit` a quarter above the tier's bound.
    pub volume: Volume,
    /// Its mount at [`HOT_TIER_DIR`].
    pub mount: VolumeMount,
    /// `NIXCACHE_HOT_TIER_DIR` and `NIXCACHE_HOT_TIER_SIZE` (bytes).
    pub env: Vec<EnvVar>,
}

/// The hot tier of an S3 cache, `None` without one. Given as the environment rather than flags,
/// as `NIXCACHE_SYNC_PINS` is: the tier is on by default, and a `spec.image` older than the hot
/// tier ignores the variables where it would refuse an unknown flag and never start.
pub fn hot_tier(spec: &NixCacheSpec) -> Option<HotTierPod> {
    // An invalid size blocks the spec before anything is rendered (`validate::spec`).
    let bytes = hot_tier_bytes(spec).ok().flatten()?;
    // The proxy bounds the NAR bytes it keeps, copies under way included; partly used blocks,
    // directories and its index come on top, and the kubelet evicts the pod once the emptyDir's
    // usage (`du`) passes its sizeLimit. A quarter more leaves room for those, while a proxy
    // that overran its bound by far would still be stopped before it fills the node's disk.
    let limit = bytes.saturating_add(bytes / 4);
    let mut volume = pod::empty_dir(HOT_TIER_VOLUME);
    if let Some(dir) = volume.empty_dir.as_mut() {
        dir.size_limit = Some(quantity::from_bytes(limit));
    }
    Some(HotTierPod {
        volume,
        mount: pod::mount(HOT_TIER_VOLUME, HOT_TIER_DIR, false),
        env: vec![
            pod::plain("NIXCACHE_HOT_TIER_DIR", HOT_TIER_DIR),
            pod::plain("NIXCACHE_HOT_TIER_SIZE", &bytes.to_string()),
        ],
    })
}

/// `--s3-redirect --s3-redirect-expiry EXPIRY` when `redirect.enabled`, else nothing. Flags, not
/// the environment: asked for explicitly, an image without redirects should refuse to start
/// rather than quietly stream.
pub fn redirect_args(spec: &NixCacheSpec) -> Vec<String> {
    let redirect = spec
        .storage
        .s3
        .as_ref()
        .and_then(|s3| s3.redirect.as_ref())
        .filter(|r| r.enabled);
    let Some(redirect) = redirect else {
        return Vec::new();
    };
    let expiry = redirect.expiry.as_deref().unwrap_or(DEFAULT_REDIRECT_EXPIRY);
    vec![
        "--s3-redirect".into(),
        "--s3-redirect-expiry".into(),
        expiry.to_owned(),
    ]
}
