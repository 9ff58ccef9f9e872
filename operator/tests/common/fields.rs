//! Managed fields of the scripted API server's server-side apply: field sets in the `FieldsV1`
//! format (`{"f:spec": {"f:replicas": {}}}`), with lists and scalars as leaves.

use serde_json::{json, Value};

use super::content;

/// What a server-side apply of `applied` by `manager` over `stored` makes.
pub struct Merged {
    /// The applied object plus the fields other managers own and it leaves out.
    pub object: Value,
    /// The other managers' entries, without the fields the apply takes over (empty ones dropped).
    pub others: Vec<Value>,
    /// `"manager": .path` of every field of another manager that the apply changes: a
    /// conflict, or taken over when forced.
    pub conflicts: Vec<String>,
    /// The manager applied the same fields as before and took none over.
    pub fields_unchanged: bool,
}

pub fn merge_apply(stored: &Value, applied: &Value, manager: &str) -> Merged {
    let entries = stored["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let (ours, mut others): (Vec<Value>, Vec<Value>) = entries
        .into_iter()
        .partition(|e| e["manager"] == manager && e["operation"] == "Apply");
    let mut conflicts = Vec::new();
    for other in &mut others {
        for path in leaves(&other["fieldsV1"]) {
            let wanted = lookup(applied, &path);
            if wanted.is_some() && wanted != lookup(stored, &path) {
                conflicts.push(format!("{}: .{}", other["manager"], path.join(".")));
                remove_field(&mut other["fieldsV1"], &path);
            }
        }
    }
    others.retain(|e| e["fieldsV1"].as_object().is_some_and(|f| !f.is_empty()));
    let mut object = applied.clone();
    for other in &others {
        for path in leaves(&other["fieldsV1"]) {
            if let (None, Some(kept)) = (lookup(&object, &path), lookup(stored, &path)) {
                insert_at(&mut object, &path, kept.clone());
            }
        }
    }
    let fields_unchanged =
        conflicts.is_empty() && ours.first().is_some_and(|e| e["fieldsV1"] == field_set(applied));
    Merged {
        object,
        others,
        conflicts,
        fields_unchanged,
    }
}

pub fn managed_entry(manager: &str, operation: &str, time: &str, fields: Value) -> Value {
    json!({"manager": manager, "operation": operation, "time": time, "fieldsType": "FieldsV1", "fieldsV1": fields})
}

/// The fields `object` sets, as a `FieldsV1` set (`{"f:spec": {"f:replicas": {}}}`); lists and
/// scalars are leaves, the object's identity (apiVersion, kind, name, namespace) is not owned.
pub fn field_set(object: &Value) -> Value {
    fn walk(value: &Value) -> Value {
        match value.as_object() {
            Some(map) if !map.is_empty() => map
                .iter()
                .map(|(k, v)| (format!("f:{k}"), walk(v)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
            _ => json!({}),
        }
    }
    let mut owned = content(object);
    if let Some(o) = owned.as_object_mut() {
        o.remove("apiVersion");
        o.remove("kind");
        if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("name");
            meta.remove("namespace");
            if meta.is_empty() {
                o.remove("metadata");
            }
        }
    }
    walk(&owned)
}

/// The paths of the leaves of a field set.
fn leaves(fields: &Value) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let Some(map) = fields.as_object() else {
        return found;
    };
    for (key, sub) in map {
        let name = key.trim_start_matches("f:").to_owned();
        match sub.as_object() {
            Some(inner) if !inner.is_empty() => {
                for mut rest in leaves(sub) {
                    rest.insert(0, name.clone());
                    found.push(rest);
                }
            }
            _ => found.push(vec![name]),
        }
    }
    found
}

fn lookup<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(object, |v, k| v.get(k))
        .filter(|v| !v.is_null())
}

fn insert_at(object: &mut Value, path: &[String], value: Value) {
    let (last, parents) = path.split_last().unwrap();
    let mut target = object;
    for k in parents {
        target = target
            .as_object_mut()
            .unwrap()
            .entry(k.clone())
            .or_insert(json!({}));
    }
    target[last.as_str()] = value;
}

/// Removes the leaf `path` from a field set, and the sets it leaves empty.
pub fn remove_field(fields: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let key = format!("f:{first}");
    let Some(map) = fields.as_object_mut() else {
        return;
    };
    if !rest.is_empty() {
        if let Some(sub) = map.get_mut(&key) {
            remove_field(sub, rest);
            if sub.as_object().is_some_and(|m| !m.is_empty()) {
                return;
            }
        }
    }
    map.remove(&key);
}
