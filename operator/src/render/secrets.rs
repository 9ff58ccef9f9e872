//! The generated signing-key Secret and the created data PersistentVolumeClaim.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, Secret, VolumeResourceRequirements,
};
use k8s_openapi::ByteString;
use kube::ResourceExt;
use nixcache_crds::NixCache;
use nixcache_protocol::SigningKey;

use super::{data_claim_name, generated_signing_secret_name, labels, owned_meta};

/// Entry of the secret key in Nix's format in a signing Secret.
pub const SECRET_KEY_ENTRY: &str = "secret-key";
/// Entry of the public key in a signing Secret.
pub const PUBLIC_KEY_ENTRY: &str = "public-key";
/// Annotation naming the key on a generated signing Secret.
const KEY_NAME_ANNOTATION: &str = "nixcache.dev/key-name";

/// A Secret holding a freshly generated `key` (created once, its data never updated). It has
/// no owner reference unless `spec.signing.deleteWithCache`: clients trust the key, so deleting
/// and recreating the NixCache must not replace it.
pub fn signing_secret(nc: &NixCache, key: &SigningKey) -> Secret {
    let mut metadata = owned_meta(nc, generated_signing_secret_name(nc), "signing-key");
    if !signing_key_deleted_with_cache(nc) {
        metadata.owner_references = None;
    }
    metadata.annotations = Some(BTreeMap::from([(
        KEY_NAME_ANNOTATION.to_owned(),
        key.name().to_owned(),
    )]));
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (
                SECRET_KEY_ENTRY.to_owned(),
                ByteString(key.to_secret_string().into_bytes()),
            ),
            (
                PUBLIC_KEY_ENTRY.to_owned(),
                ByteString(key.public_key().to_string().into_bytes()),
            ),
        ])),
        ..Secret::default()
    }
}

/// `spec.signing.deleteWithCache`: the generated key Secret is owned by (deleted with) the NixCache.
pub fn signing_key_deleted_with_cache(nc: &NixCache) -> bool {
    nc.spec.signing.as_ref().is_some_and(|s| s.delete_with_cache)
}

/// The default key name: `<name>.<namespace>-1`.
pub fn default_key_name(nc: &NixCache) -> String {
    format!("{}.{}-1", nc.name_any(), nc.namespace().unwrap_or_default())
}

/// The claim `<name>-data` for `storage.persistentVolumeClaim.size`, or `None` when the spec
/// names an existing claim (or uses S3). It has no owner: deleting the NixCache keeps the data.
pub fn persistent_volume_claim(nc: &NixCache) -> Option<PersistentVolumeClaim> {
    let volume = nc.spec.storage.persistent_volume_claim.as_ref()?;
    let size = volume.size.clone()?;
    let mut metadata = owned_meta(nc, data_claim_name(nc), "data");
    metadata.owner_references = None;
    metadata.labels = Some(labels(nc, "data"));
    Some(PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: volume.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), size)])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    })
}
