//! JSON as Nix's fingerprints print it (nlohmann `dump()`): object keys sorted bytewise, no
//! whitespace, strings escaped as serde_json escapes them (`\"`, `\\`, `\b\f\n\r\t`, other
//! control characters `\u00xx` in lowercase, everything else as is), which is nlohmann's escaping.
//! Written out rather than left to serde_json, whose key order depends on a crate feature that
//! another crate in a build may turn on.

use serde_json::Value;

/// `value` printed canonically.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        Value::String(s) => write_string(s, out),
        // Numbers, booleans and null never occur in a build trace's parsed parts; printed as
        // serde_json prints them.
        other => out.push_str(&other.to_string()),
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push_str(&Value::String(s.to_owned()).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_at_every_level_and_nothing_is_spaced() {
        let value: Value = serde_json::from_str(
            r#"{ "value": {"outPath": "a", "b": []}, "key": {"z": "1", "A": "\n\u0001é"} }"#,
        )
        .unwrap();
        assert_eq!(
            to_string(&value),
            r#"{"key":{"A":"\n\u0001é","z":"1"},"value":{"b":[],"outPath":"a"}}"#
        );
    }
}
