use super::*;

/// Written by Nix 2.8.0 (`nix copy --to file://…` of a content-addressed derivation built with
/// `secret-key-files` set), with the public key of the key that signed it.
const NIX_2_8_DOC: &str = r#"{"dependentRealisations":{},"id":"sha256:d94f7af9eb726a2f3d6a5b85f1d13d7c7d2683433f442535b28f86ed88635808!out","outPath":"sy2air4ni4an0d59lqnyasgh2ydd4gw6-ca-top","signatures":["test-ca-1:BkdgXMy/ocolPZLAUvf2r6fWqO7skwejQuC3IkEWLwjIEdzXlj9cEtHkurxS7uS0V2rtYG/Xebk8WtUOR/rWAQ=="]}"#;
const NIX_2_8_KEY: &str = "test-ca-1:/2SVuZ1YmRCOyriEJ90k0+qX8wM1eSkFTYmh4nFfIjA=";
const NIX_2_8_PATH: &str =
    "realisations/sha256:d94f7af9eb726a2f3d6a5b85f1d13d7c7d2683433f442535b28f86ed88635808!out.doi";
const DRV: &str = "9sgrhzh75qdm6n0b91q0szqr9v0s59ah-ca-top.drv";

fn key(path: &str) -> BuildTraceKey {
    BuildTraceKey::parse(path).unwrap()
}

#[test]
fn a_document_nix_signed_verifies_and_prints_back_byte_for_byte() {
    let trace = BuildTrace::parse(&key(NIX_2_8_PATH), NIX_2_8_DOC.as_bytes()).unwrap();
    assert_eq!(
        trace.out_path().to_string(),
        "sy2air4ni4an0d59lqnyasgh2ydd4gw6-ca-top"
    );
    assert!(trace.verify_any(&[PublicKey::parse(NIX_2_8_KEY).unwrap()]));
    assert_eq!(trace.to_json(), NIX_2_8_DOC);
    assert_eq!(
        trace.fingerprint(),
        r#"{"dependentRealisations":{},"id":"sha256:d94f7af9eb726a2f3d6a5b85f1d13d7c7d2683433f442535b28f86ed88635808!out","outPath":"sy2air4ni4an0d59lqnyasgh2ydd4gw6-ca-top"}"#
    );
    let other = SigningKey::generate("other").unwrap().public_key();
    assert!(!trace.verify_any(&[other]));
}

#[test]
fn a_changed_out_path_or_dependency_breaks_the_signature() {
    let nix_key = PublicKey::parse(NIX_2_8_KEY).unwrap();
    let moved = NIX_2_8_DOC.replace(
        "sy2air4ni4an0d59lqnyasgh2ydd4gw6",
        "sy2air4ni4an0d59lqnyasgh2ydd4gw7",
    );
    let trace = BuildTrace::parse(&key(NIX_2_8_PATH), moved.as_bytes()).unwrap();
    assert!(!trace.verify_any(std::slice::from_ref(&nix_key)));
    let with_dep = NIX_2_8_DOC.replace(
        r#""dependentRealisations":{}"#,
        r#""dependentRealisations":{"sha256:0fe36bf3247be31d6656a4298881d3bd85b385114ea8fe25ecb88b29b0d234b3!out":"sy2air4ni4an0d59lqnyasgh2ydd4gw6-x"}"#,
    );
    let trace = BuildTrace::parse(&key(NIX_2_8_PATH), with_dep.as_bytes()).unwrap();
    assert!(!trace.verify_any(&[nix_key]));
}

#[test]
fn the_proxy_signature_replaces_its_own_and_keeps_the_others() {
    let ours = SigningKey::generate("cache-1").unwrap();
    let mut trace = BuildTrace::parse(&key(NIX_2_8_PATH), NIX_2_8_DOC.as_bytes()).unwrap();
    trace.add_signature(&ours);
    trace.add_signature(&ours);
    assert_eq!(trace.signatures().len(), 2);
    assert!(trace.verify_any(&[ours.public_key()]));
    let printed = trace.to_json();
    let again = BuildTrace::parse(&key(NIX_2_8_PATH), printed.as_bytes()).unwrap();
    assert!(again.verify_any(&[PublicKey::parse(NIX_2_8_KEY).unwrap()]));
    assert!(again.verify_any(&[ours.public_key()]));
}

#[test]
fn layout_2_fingerprint_and_document_follow_nix_2_35() {
    // Nix 2.35 (src/libstore/realisation.cc): the fingerprint is the keyed realisation's JSON
    // without the value's signatures; signatures are written as {keyName, sig} objects.
    let k = key(&format!("build-trace-v2/{DRV}/out.doi"));
    let signer = SigningKey::generate("cache-1").unwrap();
    let doc = r#"{"outPath":"sy2air4ni4an0d59lqnyasgh2ydd4gw6-ca-top","signatures":[]}"#;
    let mut trace = BuildTrace::parse(&k, doc.as_bytes()).unwrap();
    assert_eq!(
        trace.fingerprint(),
        format!(
            r#"{{"key":{{"drvPath":"{DRV}","outputName":"out"}},"value":{{"outPath":"sy2air4ni4an0d59lqnyasgh2ydd4gw6-ca-top"}}}}"#
        )
    );
    trace.add_signature(&signer);
    let printed = trace.to_json();
    let sig = trace.signatures()[0].to_string();
    let data = sig.split_once(':').unwrap().1;
    assert_eq!(
        printed,
        format!(
            r#"{{"outPath":"sy2air4ni4an0d59lqnyasgh2ydd4gw6-ca-top","signatures":[{{"keyName":"cache-1","sig":"{data}"}}]}}"#
        )
    );
    // The string form is read too, and unknown fields are dropped.
    let strings = format!(
        r#"{{"outPath":"sy2air4ni4an0d59lqnyasgh2ydd4gw6-ca-top","signatures":["{sig}"],"future":1}}"#
    );
    let reread = BuildTrace::parse(&k, strings.as_bytes()).unwrap();
    assert!(reread.verify_any(&[signer.public_key()]));
    assert_eq!(reread.to_json(), printed);
    // The same signature does not hold for another output of the derivation.
    let dev = BuildTrace::parse(&key(&format!("build-trace-v2/{DRV}/dev.doi")), strings.as_bytes()).unwrap();
    assert!(!dev.verify_any(&[signer.public_key()]));
}

#[test]
fn malformed_documents_and_other_ids_are_refused() {
    let k = key(NIX_2_8_PATH);
    let other_id = NIX_2_8_DOC.replace("!out\"", "!dev\"");
    assert!(matches!(
        BuildTrace::parse(&k, other_id.as_bytes()),
        Err(BuildTraceError::WrongId { .. })
    ));
    for doc in [
        "",
        "[]",
        "{}",
        r#"{"id":"x"}"#,
        &NIX_2_8_DOC.replace("sy2air4ni4an0d59lqnyasgh2ydd4gw6-ca-top", "/nix/store/x"),
        &NIX_2_8_DOC.replace(r#""signatures":["#, r#""signatures":[1,"#),
        &NIX_2_8_DOC.replace(r#""dependentRealisations":{}"#, r#""dependentRealisations":[]"#),
        &NIX_2_8_DOC.replace(
            r#""dependentRealisations":{}"#,
            r#""dependentRealisations":{"x":"sy2air4ni4an0d59lqnyasgh2ydd4gw6-ca-top"}"#,
        ),
        &NIX_2_8_DOC.replace(
            r#""dependentRealisations":{}"#,
            r#""dependentRealisations":{"sha256:d94f7af9eb726a2f3d6a5b85f1d13d7c7d2683433f442535b28f86ed88635808!out":"/nix/store/x"}"#,
        ),
        &format!(r#"{{"id":"sha256:d94f7af9eb726a2f3d6a5b85f1d13d7c7d2683433f442535b28f86ed88635808!out","outPath":"sy2air4ni4an0d59lqnyasgh2ydd4gw6-ca-top","signatures":[{}]}}"#,
            vec![r#""k:AA==""#; MAX_SIGNATURES + 1].join(",")),
        &NIX_2_8_DOC.replace("test-ca-1:", "test-ca-1"),
    ] {
        assert!(
            matches!(
                BuildTrace::parse(&k, doc.as_bytes()),
                Err(BuildTraceError::Malformed(_))
            ),
            "{doc}"
        );
    }
}

#[test]
fn stored_documents_say_which_derivation_they_are_for() {
    let v1 = key(NIX_2_8_PATH);
    let trace = BuildTrace::parse(&v1, NIX_2_8_DOC.as_bytes()).unwrap();
    assert_eq!(trace.to_stored_json(), NIX_2_8_DOC);
    assert_eq!(
        BuildTrace::parse_stored(&v1, NIX_2_8_DOC.as_bytes()).unwrap(),
        trace
    );

    let v2 = key(&format!("build-trace-v2/{DRV}/out.doi"));
    let doc = r#"{"outPath":"sy2air4ni4an0d59lqnyasgh2ydd4gw6-ca-top"}"#;
    let trace = BuildTrace::parse(&v2, doc.as_bytes()).unwrap();
    let stored = trace.to_stored_json();
    assert_eq!(
        stored,
        format!(
            r#"{{"key":{{"drvPath":"{DRV}","outputName":"out"}},"value":{{"outPath":"sy2air4ni4an0d59lqnyasgh2ydd4gw6-ca-top","signatures":[]}}}}"#
        )
    );
    assert_eq!(BuildTrace::parse_stored(&v2, stored.as_bytes()).unwrap(), trace);
    // Same hash, another name: not this document (were it ever read for it).
    let renamed = key("build-trace-v2/9sgrhzh75qdm6n0b91q0szqr9v0s59ah-ca-other.drv/out.doi");
    assert!(matches!(
        BuildTrace::parse_stored(&renamed, stored.as_bytes()),
        Err(BuildTraceError::WrongId { .. })
    ));
    assert!(BuildTrace::parse_stored(&v2, doc.as_bytes()).is_err());
}

#[test]
fn every_trace_nix_wrote_verifies_and_prints_back() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/realisations");
    let nix_key = PublicKey::parse(&std::fs::read_to_string(dir.join("test-ca-1.pub")).unwrap()).unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !name.ends_with(".doi") {
            continue;
        }
        let doc = std::fs::read(&path).unwrap();
        let trace = BuildTrace::parse(&key(&format!("realisations/{name}")), &doc).unwrap();
        assert!(trace.verify_any(std::slice::from_ref(&nix_key)), "{name}");
        assert_eq!(trace.to_json().as_bytes(), &doc[..], "{name}");
        seen += 1;
    }
    assert_eq!(seen, 3);
}
