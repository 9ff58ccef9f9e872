//! Lists of the scripted API server: GET of a namespaced collection with an equality
//! `labelSelector`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// A `List` of the objects directly under `collection` whose labels match `selector`
/// (`k=v,k2=v2`).
pub fn select(objects: &BTreeMap<String, Value>, collection: &str, selector: &str) -> Value {
    let wanted: Vec<(&str, &str)> = selector
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|kv| kv.split_once('=').expect("equality selectors only"))
        .collect();
    let prefix = format!("{collection}/");
    let items: Vec<Value> = objects
        .iter()
        .filter(|(path, _)| path.strip_prefix(&prefix).is_some_and(|name| !name.contains('/')))
        .map(|(_, object)| object.clone())
        .filter(|object| {
            wanted
                .iter()
                .all(|(k, v)| object["metadata"]["labels"][*k].as_str() == Some(*v))
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
}

/// `/api/v1/namespaces/NS/RESOURCE` or `/apis/GROUP/VERSION/namespaces/NS/RESOURCE`.
pub fn is_namespaced_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.first() {
        Some(&"api") => segments.len() == 5 && segments[2] == "namespaces",
        Some(&"apis") => segments.len() == 6 && segments[3] == "namespaces",
        _ => false,
    }
}

pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (hex, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, byte) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}
