//! A build trace document: parsed from either layout, its fingerprint, its signatures checked and
//! added, printed back as Nix writes it.

use serde_json::{json, Map, Value};

use super::{canonical_json, BuildTraceError, BuildTraceKey};
use crate::{PublicKey, Sha256Hash, Signature, SigningKey, StorePath};

/// Most signatures a document may carry (Nix writes one per key that signed).
pub const MAX_SIGNATURES: usize = 64;

/// Largest build trace document accepted (one with a thousand dependent realisations fits).
pub const MAX_BUILD_TRACE: usize = 256 << 10;

/// A build trace for one [`BuildTraceKey`]. Fields Nix does not read are dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildTrace {
    key: BuildTraceKey,
    out_path: StorePath,
    /// Layout 1 only, and covered by its signatures: `{"<drv output id>": "<out path>"}` as
    /// Nix 2.4 to 2.8 wrote it (later ones write `{}`).
    dependent: Map<String, Value>,
    signatures: Vec<Signature>,
}

impl BuildTrace {
    /// Parses the document served for `key`; it must name `key` where the layout says which
    /// output it is for.
    pub fn parse(key: &BuildTraceKey, json: &[u8]) -> Result<Self, BuildTraceError> {
        Self::from_object(key, object(serde_json::from_slice(json))?)
    }

    /// Parses what [`to_stored_json`](Self::to_stored_json) printed for `key`; a document kept
    /// for another derivation (a layout 2 storage path names only the derivation's hash) is
    /// refused.
    pub fn parse_stored(key: &BuildTraceKey, json: &[u8]) -> Result<Self, BuildTraceError> {
        let mut doc = object(serde_json::from_slice(json))?;
        if let BuildTraceKey::V2 { .. } = key {
            let expected = v2_key(key);
            let found = doc.remove("key").unwrap_or(Value::Null);
            if found != expected {
                return Err(BuildTraceError::WrongId {
                    expected: expected.to_string(),
                    found: found.to_string(),
                });
            }
            doc = object(Ok(doc.remove("value").unwrap_or(Value::Null)))?;
        }
        Self::from_object(key, doc)
    }

    /// The document as kept: [`to_json`](Self::to_json), and in layout 2 wrapped with the key it
    /// is for, `{"key": {drvPath, outputName}, "value": …}` (a document of that layout does not
    /// say which derivation it is for).
    pub fn to_stored_json(&self) -> String {
        match &self.key {
            BuildTraceKey::Realisation { .. } => self.to_json(),
            BuildTraceKey::V2 { .. } => canonical_json::to_string(&json!({
                "key": v2_key(&self.key),
                "value": self.to_value(),
            })),
        }
    }

    fn from_object(key: &BuildTraceKey, mut doc: Map<String, Value>) -> Result<Self, BuildTraceError> {
        let malformed = |what: String| BuildTraceError::Malformed(what);
        let out_path = match doc.remove("outPath") {
            Some(Value::String(path)) => {
                StorePath::from_base_name(&path).map_err(|e| malformed(format!("outPath: {e}")))?
            }
            _ => return Err(malformed("no outPath string".into())),
        };
        let signatures = match doc.remove("signatures") {
            None => Vec::new(),
            Some(Value::Array(items)) if items.len() <= MAX_SIGNATURES => {
                items.iter().map(signature).collect::<Result<_, _>>()?
            }
            Some(Value::Array(_)) => return Err(malformed(format!("more than {MAX_SIGNATURES} signatures"))),
            Some(_) => return Err(malformed("signatures is not an array".into())),
        };
        let mut dependent = Map::new();
        if let BuildTraceKey::Realisation { drv_hash, output } = key {
            let expected = realisation_id(drv_hash, output);
            match doc.remove("id") {
                Some(Value::String(found)) if found == expected => {}
                Some(Value::String(found)) => return Err(BuildTraceError::WrongId { expected, found }),
                _ => return Err(malformed("no id string".into())),
            }
            match doc.remove("dependentRealisations") {
                None => {}
                Some(Value::Object(map)) if map.iter().all(dependency) => dependent = map,
                Some(_) => {
                    return Err(malformed(
                        "dependentRealisations is not an object of <drv output id>: <store path>".into(),
                    ))
                }
            }
        }
        Ok(Self {
            key: key.clone(),
            out_path,
            dependent,
            signatures,
        })
    }

    /// The output's store path.
    pub fn out_path(&self) -> &StorePath {
        &self.out_path
    }

    /// The signatures, in document order.
    pub fn signatures(&self) -> &[Signature] {
        &self.signatures
    }

    /// What the signatures sign, as Nix computes it for the layout.
    pub fn fingerprint(&self) -> String {
        let value = match &self.key {
            BuildTraceKey::Realisation { drv_hash, output } => json!({
                "dependentRealisations": Value::Object(self.dependent.clone()),
                "id": realisation_id(drv_hash, output),
                "outPath": self.out_path.to_string(),
            }),
            BuildTraceKey::V2 { .. } => json!({
                "key": v2_key(&self.key),
                "value": { "outPath": self.out_path.to_string() },
            }),
        };
        canonical_json::to_string(&value)
    }

    /// Whether one of the signatures is by one of `keys` and valid.
    pub fn verify_any(&self, keys: &[PublicKey]) -> bool {
        let fingerprint = self.fingerprint();
        self.signatures
            .iter()
            .any(|sig| keys.iter().any(|key| key.verify(&fingerprint, sig)))
    }

    /// Replaces any signature by a key of the same name with a fresh one from `key`.
    pub fn add_signature(&mut self, key: &SigningKey) {
        let sig = key.sign(&self.fingerprint());
        self.signatures.retain(|s| s.key_name() != key.name());
        self.signatures.push(sig);
    }

    /// The document as Nix writes it for the layout: sorted keys, signatures as `name:base64`
    /// strings in layout 1 and as `{keyName, sig}` objects in layout 2 (Nix 2.35 reads both).
    pub fn to_json(&self) -> String {
        canonical_json::to_string(&self.to_value())
    }

    fn to_value(&self) -> Value {
        match &self.key {
            BuildTraceKey::Realisation { drv_hash, output } => json!({
                "dependentRealisations": Value::Object(self.dependent.clone()),
                "id": realisation_id(drv_hash, output),
                "outPath": self.out_path.to_string(),
                "signatures": self.signatures.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
            BuildTraceKey::V2 { .. } => json!({
                "outPath": self.out_path.to_string(),
                "signatures": self.signatures.iter().map(|s| {
                    let text = s.to_string();
                    let data = text.split_once(':').map_or("", |(_, data)| data).to_owned();
                    json!({ "keyName": s.key_name(), "sig": data })
                }).collect::<Vec<_>>(),
            }),
        }
    }
}

/// The JSON object of `doc`, or why it is none.
fn object(doc: serde_json::Result<Value>) -> Result<Map<String, Value>, BuildTraceError> {
    match doc {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(BuildTraceError::Malformed("not a JSON object".into())),
        Err(e) => Err(BuildTraceError::Malformed(e.to_string())),
    }
}

/// `{"drvPath": <drv>, "outputName": <output>}` of a layout 2 key (`null` for layout 1).
fn v2_key(key: &BuildTraceKey) -> Value {
    match key {
        BuildTraceKey::V2 { drv, output } => json!({ "drvPath": drv.to_string(), "outputName": output }),
        BuildTraceKey::Realisation { .. } => Value::Null,
    }
}

/// `sha256:<hex>!<output>`, the `id` of a layout 1 document.
fn realisation_id(drv_hash: &Sha256Hash, output: &str) -> String {
    format!("sha256:{}!{output}", drv_hash.to_hex())
}

/// A dependency as Nix 2.4 to 2.8 wrote it: `"sha256:<hex>!<output>": "<store path base name>"`
/// (Nix 2.8 parses both, and fails on anything else).
fn dependency((id, path): (&String, &Value)) -> bool {
    let id_ok = BuildTraceKey::parse_realisation(&format!("{id}.doi")).is_ok();
    let path_ok = path
        .as_str()
        .is_some_and(|p| StorePath::from_base_name(p).is_ok());
    id_ok && path_ok
}

/// A signature as `"name:base64"` or `{"keyName": name, "sig": base64}`.
fn signature(value: &Value) -> Result<Signature, BuildTraceError> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Object(obj) => match (obj.get("keyName"), obj.get("sig")) {
            (Some(Value::String(name)), Some(Value::String(sig))) => format!("{name}:{sig}"),
            _ => {
                return Err(BuildTraceError::Malformed(
                    "a signature object without keyName and sig".into(),
                ))
            }
        },
        _ => {
            return Err(BuildTraceError::Malformed(
                "a signature is neither a string nor an object".into(),
            ))
        }
    };
    Signature::parse(&text).map_err(|e| BuildTraceError::Malformed(format!("signature: {e}")))
}

#[cfg(test)]
#[path = "doc_tests.rs"]
mod tests;
