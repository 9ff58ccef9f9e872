//! The committed CRD is what the code generates, and it has the shape the issue asks for.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use kube::CustomResourceExt;
use nixcache_crds::NixCache;

#[test]
fn committed_crd_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("nixcache.yaml");
    let committed = std::fs::read_to_string(&path).expect("crds/nixcache.yaml exists");
    let generated = nixcache_crds::crd_yaml().unwrap();
    assert!(
        committed == generated,
        "crds/nixcache.yaml is stale: run `cargo run -p nixcache-crds --bin crdgen` and commit it"
    );
}

#[test]
fn crd_has_status_scale_and_printer_columns() {
    let crd = NixCache::crd();
    assert_eq!(crd.spec.group, "nixcache.dev");
    assert_eq!(crd.spec.scope, "Namespaced");
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    let sub = version.subresources.as_ref().unwrap();
    assert!(sub.status.is_some());
    let scale = sub.scale.as_ref().unwrap();
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(scale.label_selector_path.as_deref(), Some(".status.selector"));
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    for wanted in ["Ready", "Replicas", "URL", "Age"] {
        assert!(
            columns.contains(&wanted),
            "printer column {wanted} missing: {columns:?}"
        );
    }
}

#[test]
fn status_conditions_are_a_list_keyed_by_type() {
    let schema = serde_json::to_value(NixCache::crd()).unwrap();
    let conditions = &schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        ["properties"]["conditions"];
    assert_eq!(conditions["type"], "array");
    assert_eq!(conditions["x-kubernetes-list-type"], "map", "{conditions:#}");
    assert_eq!(
        conditions["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
    // A map key must always be there.
    let required = conditions["items"]["required"].as_array().unwrap();
    assert!(required.contains(&"type".into()), "{required:?}");
}

#[test]
fn pins_are_a_list_keyed_by_store_path() {
    let schema = serde_json::to_value(NixCache::crd()).unwrap();
    let pins = &schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["pins"];
    assert_eq!(pins["type"], "array");
    // The API server refuses a path listed twice; server-side apply merges entries by path.
    assert_eq!(pins["x-kubernetes-list-type"], "map", "{pins:#}");
    assert_eq!(
        pins["x-kubernetes-list-map-keys"],
        serde_json::json!(["storePath"])
    );
    assert_eq!(pins["maxItems"], 1000);
    assert_eq!(pins["items"]["required"], serde_json::json!(["storePath"]));
    assert_eq!(pins["items"]["properties"]["closure"]["default"], true);
}

#[test]
fn every_spec_field_is_documented_for_users() {
    let schema = serde_json::to_value(NixCache::crd()).unwrap();
    let spec = &schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut undocumented = Vec::new();
    walk(spec, "spec", &mut undocumented);
    assert!(
        undocumented.is_empty(),
        "fields without a description: {undocumented:?}"
    );
}

fn walk(node: &serde_json::Value, path: &str, undocumented: &mut Vec<String>) {
    let Some(props) = node.get("properties").and_then(|p| p.as_object()) else {
        return;
    };
    for (name, child) in props {
        let child_path = format!("{path}.{name}");
        if child
            .get("description")
            .and_then(|d| d.as_str())
            .is_none_or(str::is_empty)
        {
            undocumented.push(child_path.clone());
        }
        // Kubernetes' own types (resources, affinity, …) carry upstream docs; ours are walked.
        if !child_path.contains("resources")
            && !child_path.contains("affinity")
            && !child_path.contains("tolerations")
        {
            walk(child, &child_path, undocumented);
            if let Some(items) = child.get("items") {
                walk(items, &child_path, undocumented);
            }
        }
    }
}

#[test]
fn s3_hot_tier_is_on_and_redirect_off_by_default() {
    let schema = serde_json::to_value(NixCache::crd()).unwrap();
    let s3 = &schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["storage"]["properties"]["s3"]["properties"];
    assert_eq!(s3["hotTier"]["properties"]["enabled"]["default"], true, "{s3:#}");
    assert_eq!(
        s3["hotTier"]["properties"]["size"]["x-kubernetes-int-or-string"],
        true
    );
    assert_eq!(
        s3["redirect"]["properties"]["enabled"]["default"], false,
        "{s3:#}"
    );
    // Absent, or present without `enabled`: the same defaults.
    let parse = |yaml: &str| serde_yaml::from_str::<nixcache_crds::S3Storage>(yaml).unwrap();
    assert_eq!(parse("bucket: nix").hot_tier, None);
    let explicit = parse("{bucket: nix, hotTier: {size: 1Gi}, redirect: {expiry: 1h}}");
    let tier = explicit.hot_tier.unwrap();
    assert!(tier.enabled);
    assert_eq!(tier.size.unwrap().0, "1Gi");
    let redirect = explicit.redirect.unwrap();
    assert!(!redirect.enabled);
    assert_eq!(redirect.expiry.as_deref(), Some("1h"));
}

#[test]
fn redirect_expiry_is_a_humantime_duration() {
    let schema = serde_json::to_value(NixCache::crd()).unwrap();
    let expiry = &schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["storage"]["properties"]["s3"]["properties"]["redirect"]["properties"]["expiry"];
    let validator = jsonschema::draft4::new(expiry).unwrap();
    for good in ["5m", "90s", "1h 30m", "1h30m", "7days", "300 s"] {
        assert!(validator.is_valid(&good.into()), "{good} refused");
    }
    for bad in ["5", "", "m", "-5m", "5m!", "1.5h"] {
        assert!(!validator.is_valid(&bad.into()), "{bad} accepted");
    }
}
