//! Who owns the generated signing-key Secret: nobody by default, because clients trust the key
//! and a NixCache deleted and created again must sign with the same one; the NixCache only with
//! `spec.signing.deleteWithCache`. Operator versions before that put an owner reference on every
//! generated key; it is dropped on the next reconciliation, so those keys survive too.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use nixcache_crds::NixCache;

use crate::render;
use crate::{Error, Result};

/// Makes the owner references of the generated key Secret `secret` what the spec asks for
/// (a JSON merge patch of `metadata.ownerReferences`, only when they differ).
pub async fn align(nc: &NixCache, api: &Api<Secret>, secret: &Secret) -> Result<()> {
    let current = secret.metadata.owner_references.clone().unwrap_or_default();
    let Some(wanted) = wanted_owners(nc, &current) else {
        return Ok(());
    };
    let name = secret.name_any();
    // The merge patch replaces the whole list; the resourceVersion makes it fail (409, retried)
    // rather than drop an owner someone added since the read.
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": secret.resource_version(),
            "ownerReferences": if wanted.is_empty() { None } else { Some(&wanted) },
        }
    });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::kube(format!("set the owner references of Secret {name}"), e))?;
    tracing::info!(secret = %name, deleted_with_cache = !wanted.is_empty(), "updated the owner of the signing key");
    Ok(())
}

/// The owner references the key Secret should have, or `None` if it has them: the ones it has,
/// without any NixCache of this name (also one deleted and created again under another uid),
/// plus this NixCache with `deleteWithCache`.
fn wanted_owners(nc: &NixCache, current: &[OwnerReference]) -> Option<Vec<OwnerReference>> {
    let ours = render::signing_key_deleted_with_cache(nc)
        .then(|| nc.controller_owner_ref(&()))
        .flatten();
    let mut wanted: Vec<OwnerReference> = current
        .iter()
        .filter(|owner| !names_nixcache(owner, nc) || Some(*owner) == ours.as_ref())
        .cloned()
        .collect();
    if let Some(ours) = ours.filter(|o| !wanted.contains(o)) {
        wanted.push(ours);
    }
    (wanted != current).then_some(wanted)
}

fn names_nixcache(owner: &OwnerReference, nc: &NixCache) -> bool {
    owner.kind == NixCache::kind(&())
        && owner.api_version.starts_with("nixcache.dev/")
        && owner.name == nc.name_any()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use nixcache_crds::Signing;

    fn owner(nc: &NixCache) -> OwnerReference {
        nc.controller_owner_ref(&()).unwrap()
    }

    #[test]
    fn a_nixcache_owner_is_dropped_unless_the_key_goes_with_the_cache() {
        let nc = fixtures::scaled("demo");
        let mut recreated = owner(&nc);
        recreated.uid = "uid-of-an-earlier-demo".into();
        let other = OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "demo".into(),
            uid: "uid-cm".into(),
            ..OwnerReference::default()
        };
        assert_eq!(wanted_owners(&nc, &[owner(&nc)]), Some(vec![]));
        assert_eq!(
            wanted_owners(&nc, &[recreated.clone(), other.clone()]),
            Some(vec![other.clone()])
        );
        assert_eq!(wanted_owners(&nc, std::slice::from_ref(&other)), None);
        assert_eq!(wanted_owners(&nc, &[]), None);

        let mut kept = nc.clone();
        kept.spec.signing = Some(Signing {
            delete_with_cache: true,
            ..Signing::default()
        });
        assert_eq!(wanted_owners(&kept, &[owner(&nc)]), None);
        assert_eq!(wanted_owners(&kept, &[]), Some(vec![owner(&nc)]));
        assert_eq!(
            wanted_owners(&kept, &[recreated, other.clone()]),
            Some(vec![other, owner(&nc)])
        );
    }
}
