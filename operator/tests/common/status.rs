//! Server-side apply of `/status`, by top-level field: the applied fields replace the status,
//! but for the fields other managers applied, which stay (as the API server keeps the status
//! poller's `status.cache` when the reconciler applies its fields, and the other way round).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// (object path, field manager) → the top-level status fields it applied last.
pub type Owners = BTreeMap<(String, String), BTreeSet<String>>;

/// The status after `manager` applied `applied` over `stored`.
pub fn apply(owners: &mut Owners, key: &str, manager: &str, stored: &Value, applied: &Value) -> Value {
    let applied = applied.as_object().cloned().unwrap_or_default();
    owners.insert(
        (key.to_owned(), manager.to_owned()),
        applied.keys().cloned().collect(),
    );
    let others: BTreeSet<&String> = owners
        .iter()
        .filter(|((k, m), _)| k == key && m != manager)
        .flat_map(|(_, fields)| fields)
        .collect();
    let mut status: Map<String, Value> = stored
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| others.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    status.extend(applied);
    Value::Object(status)
}
