//! Tests for `narinfo` on edited copies of a narinfo written by `nix copy` (Nix 2.8).

use super::*;

const WITHREF: &str = include_str!("../testdata/narinfo/xz/iwklygyg8nfdn22cfmipjw1q7vchpdrd.narinfo");
const SEC1: &str = include_str!("../testdata/keys/test-key-1.sec");
const SEC2: &str = include_str!("../testdata/keys/test-key-2.sec");

/// `WITHREF` with the line starting with `key` replaced by `line` (or removed if `line` is empty).
fn edit(key: &str, line: &str) -> String {
    let prefix = format!("{key}:");
    let mut out = String::new();
    for l in WITHREF.lines() {
        match (l.starts_with(&prefix), line.is_empty()) {
            (true, true) => {}
            (true, false) => out.push_str(&format!("{line}\n")),
            (false, _) => out.push_str(&format!("{l}\n")),
        }
    }
    out
}

fn field_error(text: &str) -> (&'static str, String) {
    match NarInfo::parse(text) {
        Err(NarInfoError::InvalidField { field, reason }) => (field, reason),
        other => panic!("expected InvalidField, got {other:?}"),
    }
}

#[test]
fn missing_required_fields() {
    for key in ["StorePath", "URL", "NarHash", "NarSize"] {
        assert_eq!(
            NarInfo::parse(&edit(key, "")),
            Err(NarInfoError::MissingField(key)),
            "{key}"
        );
    }
    assert_eq!(NarInfo::parse(""), Err(NarInfoError::MissingField("StorePath")));
}

#[test]
fn optional_fields_may_be_absent() {
    let mut text = WITHREF.to_owned();
    for key in [
        "Compression",
        "FileHash",
        "FileSize",
        "References",
        "Deriver",
        "Sig",
    ] {
        text = text
            .lines()
            .filter(|l| !l.starts_with(&format!("{key}:")))
            .map(|l| format!("{l}\n"))
            .collect();
    }
    let info = NarInfo::parse(&text).unwrap();
    assert_eq!(info.compression, Compression::Bzip2, "Nix's default");
    assert_eq!((info.file_hash, info.file_size, info.deriver), (None, None, None));
    assert!(info.references.is_empty() && info.sigs.is_empty());
    assert_eq!(
        NarInfo::parse(&edit("Compression", "Compression: "))
            .unwrap()
            .compression,
        Compression::Bzip2
    );
    let brotli = NarInfo::parse(&edit("Compression", "Compression: br")).unwrap();
    assert_eq!(brotli.compression, Compression::Other("br".into()));
}

#[test]
fn invalid_fields_are_named() {
    let cases = [
        (
            "StorePath",
            "StorePath: /nix/store/iwklygyg8nfdn22cfmipjw1q7vchpdr-withref",
        ),
        (
            "StorePath",
            "StorePath: /gnu/store/iwklygyg8nfdn22cfmipjw1q7vchpdrd-withref",
        ),
        ("StorePath", "StorePath: iwklygyg8nfdn22cfmipjw1q7vchpdrd-withref"),
        ("URL", "URL: "),
        ("NarSize", "NarSize: 12x"),
        ("NarSize", "NarSize: -1"),
        ("NarSize", "NarSize: +168"),
        ("NarSize", "NarSize: 0"),
        ("NarSize", "NarSize: 18446744073709551616"),
        ("NarSize", "NarSize: "),
        ("FileSize", "FileSize: big"),
        (
            "NarHash",
            "NarHash: sha256:0lhwaiqrsmph5flr6pfpzp68iagp7my8df5i1w03yyqjw4bd95z",
        ),
        (
            "NarHash",
            "NarHash: sha256:elhwaiqrsmph5flr6pfpzp68iagp7my8df5i1w03yyqjw4bd95z8",
        ),
        ("NarHash", "NarHash: md5:0lhwaiqrsmph5flr6pfpzp68ia"),
        (
            "NarHash",
            "NarHash: 0lhwaiqrsmph5flr6pfpzp68iagp7my8df5i1w03yyqjw4bd95z8",
        ),
        ("FileHash", "FileHash: sha1:0119vmmckdq7k2348q6pvrg8a6qd9fy8"),
        (
            "References",
            "References: 7qxb8wbwqha95lbfrcj97j6fb8wbywa4-leaf ../etc",
        ),
        (
            "References",
            "References: /nix/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4-leaf",
        ),
        ("References", "References: 7qxb8wbwqha95lbfrcj97j6fb8wbywa4-le/af"),
        ("Deriver", "Deriver: j6kvs98swr0fnxb3h2b3dyznpbr1p0ql"),
        ("Sig", "Sig: test-key-1"),
        ("Sig", "Sig: test-key-1:AAAA"),
    ];
    for (field, line) in cases {
        let key = line.split(':').next().unwrap();
        let (got, reason) = field_error(&edit(key, line));
        assert_eq!(got, field, "{line}: {reason}");
        let message = NarInfo::parse(&edit(key, line)).unwrap_err().to_string();
        assert!(message.contains(field), "{message}");
    }
}

#[test]
fn duplicates_and_bad_lines() {
    for line in [
        "URL: nar/x.nar",
        "StorePath: /nix/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4-leaf",
        "NarSize: 1",
    ] {
        let key = line.split(':').next().unwrap();
        let text = format!("{WITHREF}{line}\n");
        assert_eq!(
            NarInfo::parse(&text),
            Err(NarInfoError::DuplicateField(key.into())),
            "{line}"
        );
    }
    let text = format!("{WITHREF}References: \n");
    assert_eq!(
        NarInfo::parse(&text),
        Err(NarInfoError::DuplicateField("References".into()))
    );
    let text = WITHREF.replacen("URL: ", "URL ", 1);
    assert_eq!(NarInfo::parse(&text), Err(NarInfoError::InvalidLine { line: 2 }));
    assert_eq!(
        NarInfoError::InvalidLine { line: 2 }.to_string(),
        "narinfo line 2 is not of the form \"Key: value\""
    );
}

#[test]
fn lenient_where_nix_is() {
    let text = format!("{}\nX-Unknown: whatever\n\n", WITHREF.replace('\n', "\r\n"));
    assert_eq!(NarInfo::parse(&text), NarInfo::parse(WITHREF));
    let unknown = NarInfo::parse(&edit("Deriver", "Deriver: unknown-deriver")).unwrap();
    assert_eq!(unknown.deriver, None);
    let no_trailing_newline = NarInfo::parse(WITHREF.trim_end()).unwrap();
    assert_eq!(no_trailing_newline.to_string(), WITHREF);
    let sri = edit(
        "NarHash",
        "NarHash: sha256-6JfUFuESez8AD7G4hnw996mIzP3XXZOpK/BWnXFUHFI=",
    );
    assert_eq!(NarInfo::parse(&sri), NarInfo::parse(WITHREF));
}

#[test]
fn add_signature_replaces_same_key_only() {
    let key1 = SigningKey::parse(SEC1).unwrap();
    let key2 = SigningKey::parse(SEC2).unwrap();
    let mut info = NarInfo::parse(WITHREF).unwrap();
    let original = info.sigs.clone();
    info.add_signature(&key1);
    assert_eq!(
        info.sigs, original,
        "same deterministic signature replaces the old one"
    );
    info.add_signature(&key2);
    assert_eq!(info.sigs.len(), 2);
    assert!(info.verify_any(&[key2.public_key()]));
    info.nar_size += 1;
    assert!(!info.verify_any(&[key1.public_key(), key2.public_key()]));
    info.add_signature(&key2);
    assert_eq!(info.sigs.len(), 2);
    assert!(info.verify_any(&[key2.public_key()]));
    assert!(!info.verify_any(&[key1.public_key()]));
    assert!(!info.verify_any(&[]));
}

#[test]
fn fingerprint_follows_listed_order() {
    let a = StorePath::from_base_name("7qxb8wbwqha95lbfrcj97j6fb8wbywa4-leaf").unwrap();
    let b = StorePath::from_base_name("qqavlq6yvg75n8ngnrl00hjnmdnsk9mb-dir-out").unwrap();
    let hash = Sha256Hash::digest(b"");
    let fp = fingerprint(&b, &hash, 7, &[b.clone(), a.clone()]);
    let expected = format!(
        "1;{};{hash};7;{},{}",
        b.to_absolute(),
        b.to_absolute(),
        a.to_absolute()
    );
    assert_eq!(fp, expected);
    assert_eq!(
        fingerprint(&a, &hash, 1, &[]),
        format!("1;{};{hash};1;", a.to_absolute())
    );
}
