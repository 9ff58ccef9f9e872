//! Reading the Secrets a NixCache references, and the signing key it signs with.
//!
//! Secret values never leave this module except as digests (for the pod template annotation and
//! the migration Job name) and the public key. Nothing here logs a value.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;
use kube::ResourceExt;
use nixcache_crds::{NixCache, SecretKeyRef};
use nixcache_protocol::SigningKey;

use crate::blocker::Blocker;
use crate::context::Context;
use crate::error::api_code;
use crate::render::{self, short_hash, PUBLIC_KEY_ENTRY, SECRET_KEY_ENTRY};
use crate::{Error, Result};

/// What the pods will see of the referenced Secrets, as digests, and the public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretInputs {
    /// Digest of every Secret value the pods use (changes roll the pods).
    pub secrets_hash: String,
    /// Digest of the database URL (external databases only).
    pub database_hash: Option<String>,
    /// The signing key's public half, `NAME:BASE64`.
    pub public_key: String,
}

/// One Secret key a NixCache uses, and the spec field naming it (for messages).
struct Reference {
    field: String,
    name: String,
    key: String,
}

fn references(nc: &NixCache) -> Vec<Reference> {
    let spec = &nc.spec;
    let mut refs = Vec::new();
    let reference = |field: &str, r: &SecretKeyRef, default_key: &str| Reference {
        field: field.to_owned(),
        name: r.name.clone(),
        key: r.key_or(default_key).to_owned(),
    };
    if let Some(r) = &spec.database.url_secret_ref {
        refs.push(reference("spec.database.urlSecretRef", r, "url"));
    }
    if let Some(c) = spec
        .storage
        .s3
        .as_ref()
        .and_then(|s| s.credentials_secret_ref.as_ref())
    {
        let id = c.access_key_id_key.as_deref().unwrap_or("AWS_ACCESS_KEY_ID");
        let secret = c
            .secret_access_key_key
            .as_deref()
            .unwrap_or("AWS_SECRET_ACCESS_KEY");
        for key in [id, secret] {
            refs.push(Reference {
                field: "spec.storage.s3.credentialsSecretRef".into(),
                name: c.name.clone(),
                key: key.to_owned(),
            });
        }
    }
    for (i, upstream) in spec.upstreams.iter().enumerate() {
        if let Some(r) = &upstream.netrc_secret_ref {
            refs.push(reference(
                &format!("spec.upstreams[{i}].netrcSecretRef"),
                r,
                "netrc",
            ));
        }
    }
    if let Some(u) = &spec.uploads {
        refs.push(reference(
            "spec.uploads.credentialsSecretRef",
            &u.credentials_secret_ref,
            "credentials",
        ));
    }
    if let Some(p) = &spec.private {
        refs.push(reference(
            "spec.private.credentialsSecretRef",
            &p.credentials_secret_ref,
            "credentials",
        ));
    }
    refs
}

/// Names of the Secrets `nc` reads (to map Secret changes to NixCaches).
pub fn referenced_secret_names(nc: &NixCache) -> Vec<String> {
    let mut names: Vec<String> = references(nc).into_iter().map(|r| r.name).collect();
    names.push(render::signing_secret_ref(nc).name);
    // Only checked to be there (a warning), never read into the pods' hash.
    if let Some(r) = nc
        .spec
        .warm
        .as_ref()
        .and_then(|w| w.credential_secret_ref.as_ref())
    {
        names.push(r.name.clone());
    }
    names
}

/// Reads every referenced Secret (each once) and the signing key (generating it if needed).
pub async fn read(nc: &NixCache, ctx: &Context) -> Result<Result<SecretInputs, Blocker>> {
    let ns = nc
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(nc.name_any()))?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut fetched: BTreeMap<String, Option<Secret>> = BTreeMap::new();
    let mut values: Vec<(String, Vec<u8>)> = Vec::new();
    let mut database_hash = None;
    for r in references(nc) {
        let secret = get_once(&api, &mut fetched, &r.name).await?;
        let value = match entry(secret, &r, &ns) {
            Ok(v) => v,
            Err(blocker) => return Ok(Err(blocker)),
        };
        if r.field == "spec.database.urlSecretRef" {
            if let Err(blocker) = check_database_url(&value, &r) {
                return Ok(Err(blocker));
            }
            database_hash = Some(short_hash(&[
                r.name.as_bytes(),
                b"\n",
                r.key.as_bytes(),
                b"\n",
                &value,
            ]));
        }
        values.push((format!("{}/{}/{}", r.field, r.name, r.key), value));
    }
    let key = match signing_key(nc, ctx, &api, &mut fetched).await? {
        Ok(key) => key,
        Err(blocker) => return Ok(Err(blocker)),
    };
    values.push(("signing".into(), key.secret.into_bytes()));
    let parts: Vec<&[u8]> = values
        .iter()
        .flat_map(|(k, v)| [k.as_bytes(), b"\0", v.as_slice(), b"\0"])
        .collect();
    Ok(Ok(SecretInputs {
        secrets_hash: short_hash(&parts),
        database_hash,
        public_key: key.public,
    }))
}

async fn get_once<'a>(
    api: &Api<Secret>,
    fetched: &'a mut BTreeMap<String, Option<Secret>>,
    name: &str,
) -> Result<Option<&'a Secret>> {
    if !fetched.contains_key(name) {
        let secret = api
            .get_opt(name)
            .await
            .map_err(|e| Error::kube(format!("read Secret {name}"), e))?;
        fetched.insert(name.to_owned(), secret);
    }
    Ok(fetched.get(name).and_then(Option::as_ref))
}

fn entry(secret: Option<&Secret>, r: &Reference, ns: &str) -> Result<Vec<u8>, Blocker> {
    let Some(secret) = secret else {
        return Err(not_found(r, ns));
    };
    let data = secret.data.clone().unwrap_or_default();
    match data.get(&r.key) {
        Some(v) => Ok(v.0.clone()),
        None => Err(Blocker::new(
            "SecretKeyMissing",
            format!(
                "Secret {} named in {} has no key {:?} (its keys: {})",
                r.name,
                r.field,
                r.key,
                data.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

fn not_found(r: &Reference, ns: &str) -> Blocker {
    Blocker::new(
        "SecretNotFound",
        format!(
            "Secret {} named in {} does not exist in namespace {ns}; create it and the NixCache is reconciled at once",
            r.name, r.field
        ),
    )
}

fn check_database_url(value: &[u8], r: &Reference) -> Result<(), Blocker> {
    let text = String::from_utf8_lossy(value);
    let ok = ["postgres://", "postgresql://", "mysql://", "mariadb://"]
        .iter()
        .any(|scheme| text.trim().starts_with(scheme));
    if ok {
        return Ok(());
    }
    Err(Blocker::new(
        "InvalidDatabaseUrl",
        format!(
            "the URL in Secret {} key {:?} ({}) must start with postgres://, postgresql://, mysql:// or mariadb://; for SQLite set spec.database.sqlite instead",
            r.name, r.field, r.key
        ),
    ))
}

/// A signing key as read from (or written to) its Secret.
struct Key {
    secret: String,
    public: String,
}

async fn signing_key(
    nc: &NixCache,
    ctx: &Context,
    api: &Api<Secret>,
    fetched: &mut BTreeMap<String, Option<Secret>>,
) -> Result<Result<Key, Blocker>> {
    let user_secret = nc.spec.signing.as_ref().and_then(|s| s.secret_ref.as_ref());
    let target = render::signing_secret_ref(nc);
    let field = if user_secret.is_some() {
        "spec.signing.secretRef"
    } else {
        "the generated signing key"
    };
    let r = Reference {
        field: field.to_owned(),
        name: target.name.clone(),
        key: target.key_or(SECRET_KEY_ENTRY).to_owned(),
    };
    let existing = get_once(api, fetched, &r.name).await?.cloned();
    let ns = nc.namespace().unwrap_or_default();
    let secret = match (existing, user_secret) {
        (Some(secret), Some(_)) => secret,
        (Some(secret), None) => {
            super::signing_owner::align(nc, api, &secret).await?;
            secret
        }
        (None, Some(_)) => return Ok(Err(not_found(&r, &ns))),
        (None, None) => generate(nc, ctx, api).await?,
    };
    Ok(parse_key(&secret, &r, &ns))
}

fn parse_key(secret: &Secret, r: &Reference, ns: &str) -> Result<Key, Blocker> {
    let text = String::from_utf8_lossy(&entry(Some(secret), r, ns)?)
        .trim()
        .to_owned();
    let key = SigningKey::parse(&text).map_err(|e| {
        Blocker::new(
            "InvalidSigningKey",
            format!(
                "Secret {} key {:?} ({}) is not a Nix secret key: {e}; make one with `nixcache keygen NAME --secret-key-file F --public-key-file P`",
                r.name, r.key, r.field
            ),
        )
    })?;
    let derived = key.public_key().to_string();
    let stated = secret.data.as_ref().and_then(|d| d.get(PUBLIC_KEY_ENTRY));
    if let Some(stated) = stated {
        let stated = String::from_utf8_lossy(&stated.0).trim().to_owned();
        if stated != derived {
            return Err(Blocker::new(
                "InvalidSigningKey",
                format!(
                    "Secret {} has a {PUBLIC_KEY_ENTRY:?} entry that does not belong to its secret key; remove the entry or fix it (the secret key's public key is {derived})",
                    r.name
                ),
            ));
        }
    }
    Ok(Key {
        secret: text,
        public: derived,
    })
}

/// Generates the key into `<name>-signing-key` with a create (its data is never updated): if
/// another operator replica won the race, its Secret is used. The Secret outlives the NixCache
/// unless `spec.signing.deleteWithCache` (see [`super::signing_owner`]).
async fn generate(nc: &NixCache, ctx: &Context, api: &Api<Secret>) -> Result<Secret> {
    let key_name = nc
        .spec
        .signing
        .as_ref()
        .and_then(|s| s.key_name.clone())
        .unwrap_or_else(|| render::default_key_name(nc));
    let key = SigningKey::generate(&key_name).map_err(Error::KeyGeneration)?;
    let secret = render::signing_secret(nc, &key);
    let name = secret.name_any();
    match api.create(&PostParams::default(), &secret).await {
        Ok(created) => {
            let public = key.public_key().to_string();
            tracing::info!(secret = %name, public_key = %public, "generated a signing key");
            let previous = nc.status.as_ref().and_then(|s| s.public_key.clone());
            let (type_, reason, note) = match previous {
                Some(old) if old != public => (
                    EventType::Warning,
                    "SigningKeyReplaced",
                    format!("Secret {name} was missing, so a new key was generated: clients must trust {public} instead of {old}"),
                ),
                _ => (
                    EventType::Normal,
                    "SigningKeyGenerated",
                    format!("generated signing key {key_name} into Secret {name}; clients trust {public}"),
                ),
            };
            super::events::publish(ctx, nc, type_, reason, "GenerateSigningKey", note).await;
            Ok(created)
        }
        Err(e) if api_code(&e) == Some(409) => api
            .get(&name)
            .await
            .map_err(|e| Error::kube(format!("read Secret {name}"), e)),
        Err(e) => Err(Error::kube(format!("create Secret {name}"), e)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fixtures::{self, NixCacheExt, HELLO};
    use nixcache_crds::{Private, SecretKeyRef};

    #[test]
    fn the_readers_and_the_warm_credential_secrets_are_watched() {
        let mut nc = fixtures::scaled("demo").with_warm("30 4 * * *", &[HELLO]);
        let secret = |name: &str| SecretKeyRef {
            name: name.into(),
            key: None,
        };
        nc.spec.private = Some(Private {
            credentials_secret_ref: secret("readers"),
        });
        nc.spec.warm.as_mut().unwrap().credential_secret_ref = Some(secret("warm-token"));
        let names = referenced_secret_names(&nc);
        assert!(
            names.contains(&"readers".to_owned()) && names.contains(&"warm-token".to_owned()),
            "{names:?}"
        );
        // The readers' file rolls the pods when it changes; the warm-up's credential is not theirs.
        let read: Vec<_> = references(&nc).into_iter().map(|r| (r.field, r.key)).collect();
        assert!(read.contains(&("spec.private.credentialsSecretRef".into(), "credentials".into())));
        assert!(
            !read.iter().any(|(field, _)| field.starts_with("spec.warm")),
            "{read:?}"
        );
    }
}
