//! Every manifest in `examples/` validates against the generated CRD's OpenAPI schema and its
//! CEL rules; the broken ones in `examples/invalid/` are rejected with the offending field named.
//!
//! Like `kubectl apply` (strict field validation, the default), unknown fields are errors; CEL
//! rules are evaluated with kube's client-side CEL (the same Kubernetes CEL library functions the
//! API server has) after the schema's defaults are applied, as the API server does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use serde_json::Value;

fn crd_schema() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("nixcache.yaml");
    let crd: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Objects with declared properties reject undeclared ones (kubectl's strict field validation).
fn strict(schema: &mut Value) {
    if let Some(obj) = schema.as_object_mut() {
        let declares = obj.contains_key("properties");
        let open = obj.contains_key("additionalProperties")
            || obj.contains_key("x-kubernetes-preserve-unknown-fields");
        if declares && !open {
            obj.insert("additionalProperties".into(), Value::Bool(false));
        }
        for (_, child) in obj.iter_mut() {
            strict(child);
        }
    } else if let Some(items) = schema.as_array_mut() {
        items.iter_mut().for_each(strict);
    }
}

/// Every error of `doc` against the CRD: `field: message`.
fn errors(doc: &Value) -> Vec<String> {
    let schema = crd_schema();
    let mut structural = schema.clone();
    // The API server adds these to every CRD's root schema.
    let props = structural["properties"].as_object_mut().unwrap();
    props.insert("apiVersion".into(), serde_json::json!({"type": "string"}));
    props.insert("kind".into(), serde_json::json!({"type": "string"}));
    props
        .entry("metadata")
        .or_insert(serde_json::json!({"type": "object"}));
    strict(&mut structural);
    let validator = jsonschema::draft4::new(&structural).expect("the CRD schema compiles");
    let mut found: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| {
            format!(
                "{}: {e}",
                e.instance_path()
                    .as_str()
                    .trim_start_matches('/')
                    .replace('/', ".")
            )
        })
        .collect();
    if found.is_empty() {
        if let Err(cel) = kube::core::cel::Validator::new().validate_with_defaults(&schema, doc, None) {
            found.extend(cel.iter().map(|e| format!("{}: {}", e.field_path, e.message)));
        }
    }
    found
}

fn load(path: &Path) -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn every_example_is_valid() {
    let files = yaml_files(&examples_dir());
    assert_eq!(files.len(), 3, "the three documented setups: {files:?}");
    for file in files {
        let doc = load(&file);
        assert_eq!(doc["kind"], "NixCache", "{}", file.display());
        let errors = errors(&doc);
        assert!(errors.is_empty(), "{} is rejected: {errors:?}", file.display());
    }
}

#[test]
fn broken_examples_are_rejected_naming_the_field() {
    let expected = [
        ("negative-replicas.yaml", "spec.replicas", "minimum"),
        (
            "s3-without-bucket.yaml",
            "spec.storage.s3",
            "\"bucket\" is a required property",
        ),
        (
            "sqlite-three-replicas.yaml",
            "spec.replicas",
            "database.sqlite serves one replica only",
        ),
        (
            "two-storages.yaml",
            "spec.storage",
            "exactly one of storage.s3 and storage.persistentVolumeClaim",
        ),
        ("unknown-field.yaml", "spec", "'replica' was unexpected"),
    ];
    let files = yaml_files(&examples_dir().join("invalid"));
    assert_eq!(
        files.len(),
        expected.len(),
        "every broken example has an expectation: {files:?}"
    );
    for (file, field, message) in expected {
        let errors = errors(&load(&examples_dir().join("invalid").join(file)));
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&format!("{field}:")) && e.contains(message)),
            "{file}: expected an error on {field} containing {message:?}, got {errors:?}"
        );
    }
}

#[test]
fn the_cel_rules_accept_what_they_should() {
    // One replica with SQLite, replicas defaulted (absent) and 0: accepted.
    let mut doc = load(&examples_dir().join("single-sqlite-pvc.yaml"));
    doc["spec"].as_object_mut().unwrap().remove("replicas");
    assert!(errors(&doc).is_empty(), "{:?}", errors(&doc));
    doc["spec"]["replicas"] = 0.into();
    assert!(errors(&doc).is_empty());
    // Autoscaling with SQLite: rejected, naming autoscaling.
    doc["spec"]["autoscaling"] = serde_json::json!({"minReplicas": 1, "maxReplicas": 2});
    let found = errors(&doc);
    assert!(
        found.iter().any(|e| e.starts_with("spec.autoscaling:")),
        "{found:?}"
    );
    // min > max: rejected, naming minReplicas.
    let mut doc = load(&examples_dir().join("postgres-s3-three-replicas.yaml"));
    doc["spec"]["autoscaling"]["minReplicas"] = 20.into();
    let found = errors(&doc);
    assert!(
        found
            .iter()
            .any(|e| e.contains("minReplicas") && e.contains("must not exceed")),
        "{found:?}"
    );
    // A name that cannot prefix a Service name: rejected.
    let mut doc = load(&examples_dir().join("postgres-s3-three-replicas.yaml"));
    doc["metadata"]["name"] = "Cache.Example".into();
    let found = errors(&doc);
    assert!(found.iter().any(|e| e.contains("metadata.name")), "{found:?}");
}

/// Schedules: five cron fields or a nickname that both Kubernetes and the replica's scheduler
/// know; GC, fsck and warm-up alike.
#[test]
fn schedules_are_five_fields_or_a_nickname() {
    const HELLO: &str = "/nix/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4-hello-2.12.1";
    let mut doc = load(&examples_dir().join("postgres-s3-three-replicas.yaml"));
    for (field, extra) in [
        ("gc", serde_json::json!({"maxSize": "10G"})),
        ("fsck", serde_json::json!({})),
        ("warm", serde_json::json!({"paths": [HELLO]})),
    ] {
        for (schedule, ok) in [
            ("@daily", true),
            ("@hourly", true),
            ("@weekly", true),
            ("17 3 * * *", true),
            ("*/5  *\t* * 1-5", true),
            ("daily", false),
            ("@midnight", false),
            ("0 0 * * * *", false),
            ("* * * *", false),
        ] {
            let mut spec = extra.clone();
            spec["schedule"] = schedule.into();
            doc["spec"][field] = spec;
            let found = errors(&doc);
            let refused = found
                .iter()
                .any(|e| e.starts_with(&format!("spec.{field}.schedule:")));
            assert_eq!(!refused, ok, "{field} {schedule:?}: {found:?}");
        }
        doc["spec"].as_object_mut().unwrap().remove(field);
    }
}

#[test]
fn warm_needs_a_schedule_and_store_paths() {
    const HELLO: &str = "/nix/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4-hello-2.12.1";
    let mut doc = load(&examples_dir().join("postgres-s3-three-replicas.yaml"));
    doc["spec"]["warm"] = serde_json::json!({
        "schedule": "30 4 * * *", "timeZone": "Europe/Berlin",
        "paths": [HELLO, "/nix/store/0c0wf1qw0hh0gmgxbbd1k7ligmakdfrn-.foo"],
        "narinfosOnly": true, "concurrency": 16,
    });
    assert!(errors(&doc).is_empty(), "{:?}", errors(&doc));
    let bad_paths = [
        "/nix/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4",       // no name
        "/nix/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa-hello",  // 31 characters
        "/nix/store/eqxb8wbwqha95lbfrcj97j6fb8wbywa4-hello", // `e` is not nixbase32
        "nix/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4-hello",  // relative
        "/nix/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4-a b",   // a space
        "/nix/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4-x/bin", // inside a path
        "/gnu/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4-hello", // another store
    ];
    for bad in bad_paths {
        doc["spec"]["warm"]["paths"] = serde_json::json!([HELLO, bad]);
        let found = errors(&doc);
        assert!(
            found
                .iter()
                .any(|e| e.starts_with("spec.warm.paths.1:") && e.contains("does not match")),
            "{bad}: {found:?}"
        );
    }
    let long_name = format!("/nix/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4-{}", "a".repeat(212));
    doc["spec"]["warm"]["paths"] = serde_json::json!([long_name]);
    assert!(errors(&doc).iter().any(|e| e.starts_with("spec.warm.paths.0:")));
    for (change, field) in [
        (serde_json::json!({"paths": []}), "spec.warm.paths:"),
        (serde_json::json!({"concurrency": 0}), "spec.warm.concurrency:"),
        (serde_json::json!({"concurrency": 257}), "spec.warm.concurrency:"),
        (serde_json::json!({"schedule": "daily"}), "spec.warm.schedule:"),
    ] {
        let mut doc = doc.clone();
        doc["spec"]["warm"] = serde_json::json!({"schedule": "30 4 * * *", "paths": [HELLO]});
        for (key, value) in change.as_object().unwrap() {
            doc["spec"]["warm"][key] = value.clone();
        }
        let found = errors(&doc);
        assert!(found.iter().any(|e| e.starts_with(field)), "{change}: {found:?}");
    }
    doc["spec"]["warm"] = serde_json::json!({"paths": [HELLO]});
    let found = errors(&doc);
    assert!(
        found
            .iter()
            .any(|e| e.contains("\"schedule\" is a required property")),
        "{found:?}"
    );
}

#[test]
fn fsck_needs_a_schedule_and_repairs_on_a_volume() {
    // On S3: a report-only, verifying check in a time zone is fine; repair defaults to true.
    let mut doc = load(&examples_dir().join("postgres-s3-three-replicas.yaml"));
    doc["spec"]["fsck"] = serde_json::json!({
        "schedule": "0 5 * * 0", "timeZone": "Europe/Berlin", "verify": true, "repair": false,
    });
    assert!(errors(&doc).is_empty(), "{:?}", errors(&doc));
    doc["spec"]["fsck"] = serde_json::json!({"schedule": "0 5 * * 0"});
    assert!(errors(&doc).is_empty(), "{:?}", errors(&doc));
    let fsck: nixcache_crds::Fsck = serde_json::from_value(doc["spec"]["fsck"].clone()).unwrap();
    assert!(fsck.repair && !fsck.verify, "{fsck:?}");
    for (fsck, field, message) in [
        (
            serde_json::json!({"schedule": "daily"}),
            "spec.fsck.schedule:",
            "does not match",
        ),
        (
            serde_json::json!({"verify": true}),
            "spec.fsck:",
            "\"schedule\" is a required property",
        ),
        (
            serde_json::json!({"schedule": "0 5 * * 0", "repair": "no"}),
            "spec.fsck.repair:",
            "boolean",
        ),
    ] {
        doc["spec"]["fsck"] = fsck.clone();
        let found = errors(&doc);
        assert!(
            found.iter().any(|e| e.starts_with(field) && e.contains(message)),
            "{fsck}: {found:?}"
        );
    }
    // On a volume the replica runs fsck and always repairs: report-only is refused there.
    let mut doc = load(&examples_dir().join("single-sqlite-pvc.yaml"));
    assert!(errors(&doc).is_empty(), "{:?}", errors(&doc));
    doc["spec"]["fsck"]["repair"] = true.into();
    assert!(errors(&doc).is_empty(), "{:?}", errors(&doc));
    doc["spec"]["fsck"]["repair"] = false.into();
    let found = errors(&doc);
    assert!(
        found
            .iter()
            .any(|e| e.starts_with("spec.fsck.repair:") && e.contains("needs storage.s3")),
        "{found:?}"
    );
}

#[test]
fn pins_are_store_paths_with_their_closures_by_default() {
    const HELLO: &str = "/nix/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4-hello-2.12.1";
    let doc = load(&examples_dir().join("postgres-s3-three-replicas.yaml"));
    assert!(errors(&doc).is_empty(), "{:?}", errors(&doc));
    let spec: nixcache_crds::NixCacheSpec = serde_json::from_value(doc["spec"].clone()).unwrap();
    let closures: Vec<bool> = spec.pins.iter().map(|p| p.closure).collect();
    assert_eq!(closures, [true, false], "closure defaults to true");
    for (pins, field, message) in [
        (
            serde_json::json!([{"storePath": HELLO}, {"storePath": "/nix/store/eqxb8wbwqha95lbfrcj97j6fb8wbywa4-hello"}]),
            "spec.pins.1.storePath:",
            "does not match",
        ),
        (
            serde_json::json!([{"storePath": "/nix/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4"}]),
            "spec.pins.0.storePath:",
            "does not match",
        ),
        (
            serde_json::json!([{"closure": true}]),
            "spec.pins.0:",
            "\"storePath\" is a required property",
        ),
        (
            serde_json::json!([HELLO]),
            "spec.pins.0:",
            "is not of type \"object\"",
        ),
        (
            serde_json::json!([{"storePath": HELLO, "closure": "yes"}]),
            "spec.pins.0.closure:",
            "boolean",
        ),
        (
            serde_json::json!([{"storePath": HELLO, "path": HELLO}]),
            "spec.pins.0:",
            "'path' was unexpected",
        ),
    ] {
        let mut doc = doc.clone();
        doc["spec"]["pins"] = pins.clone();
        let found = errors(&doc);
        assert!(
            found.iter().any(|e| e.starts_with(field) && e.contains(message)),
            "{pins}: {found:?}"
        );
    }
    // At most 1000: each is an argument of the replicas' command line.
    let many = |n: usize| -> Value {
        (0..n)
            .map(|i| serde_json::json!({"storePath": format!("/nix/store/{i:0>32}-p")}))
            .collect()
    };
    let mut doc = doc.clone();
    doc["spec"]["pins"] = many(1000);
    assert!(errors(&doc).is_empty(), "{:?}", errors(&doc));
    doc["spec"]["pins"] = many(1001);
    let found = errors(&doc);
    assert!(
        found
            .iter()
            .any(|e| e.starts_with("spec.pins:") && e.contains("more than 1000")),
        "{found:?}"
    );
}

#[test]
fn gc_may_keep_uploads() {
    let doc = load(&examples_dir().join("mysql-minio.yaml"));
    assert!(errors(&doc).is_empty(), "{:?}", errors(&doc));
    let gc: nixcache_crds::GarbageCollection = serde_json::from_value(doc["spec"]["gc"].clone()).unwrap();
    assert!(gc.keep_uploads);
    let mut doc = doc.clone();
    doc["spec"]["gc"].as_object_mut().unwrap().remove("keepUploads");
    let gc: nixcache_crds::GarbageCollection = serde_json::from_value(doc["spec"]["gc"].clone()).unwrap();
    assert!(!gc.keep_uploads, "off by default");
    doc["spec"]["gc"]["keepUploads"] = "yes".into();
    let found = errors(&doc);
    assert!(
        found
            .iter()
            .any(|e| e.starts_with("spec.gc.keepUploads:") && e.contains("boolean")),
        "{found:?}"
    );
}
