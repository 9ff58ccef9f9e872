//! Checks against files produced by real Nix 2.8 (see `testdata/README.md`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use nixcache_protocol::{
    nixbase32, Compression, NarFile, NarInfo, PublicKey, Sha256Hash, SigningKey, StorePathHash,
};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata").join(rel)
}

fn read(rel: &str) -> String {
    fs::read_to_string(testdata(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Data lines of a whitespace-separated fixture table (comments skipped).
fn table(rel: &str) -> Vec<Vec<String>> {
    let text = read(rel);
    let rows = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty());
    rows.map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const KEY_NAMES: [&str; 3] = ["test-key-1", "test-key-2", "generated"];

fn secret_keys() -> Vec<SigningKey> {
    KEY_NAMES
        .iter()
        .map(|n| SigningKey::parse(&read(&format!("keys/{n}.sec"))).unwrap())
        .collect()
}

fn public_keys() -> Vec<PublicKey> {
    KEY_NAMES
        .iter()
        .map(|n| PublicKey::parse(&read(&format!("keys/{n}.pub"))).unwrap())
        .collect()
}

/// Every `(directory, file name, text)` under `testdata/narinfo/*/`.
fn narinfos() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for dir in fs::read_dir(testdata("narinfo")).unwrap() {
        let dir = dir.unwrap().path();
        for file in fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            let dir_name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let file_name = file.file_name().unwrap().to_string_lossy().into_owned();
            out.push((dir_name, file_name, fs::read_to_string(&file).unwrap()));
        }
    }
    assert!(out.len() >= 14, "fixtures missing: {}", out.len());
    out
}

#[test]
fn narinfos_round_trip_byte_identical() {
    for (dir, name, text) in narinfos() {
        let info = NarInfo::parse(&text).unwrap_or_else(|e| panic!("{dir}/{name}: {e}"));
        assert_eq!(info.to_string(), text, "{dir}/{name}");
        assert!(
            info.references.windows(2).all(|w| w[0] < w[1]),
            "Nix sorts references"
        );
        assert_eq!(
            nixcache_protocol::parse_narinfo_name(&name).unwrap(),
            *info.store_path.hash()
        );
    }
}

#[test]
fn narinfo_urls_match_file_hash_and_compression() {
    for (dir, name, text) in narinfos() {
        let info = NarInfo::parse(&text).unwrap();
        if dir != "generated-key" {
            assert_eq!(info.compression, Compression::parse(&dir), "{dir}/{name}");
        }
        let file = NarFile::parse(info.url.strip_prefix("nar/").unwrap()).unwrap();
        assert_eq!(Some(file.hash), info.file_hash, "{dir}/{name}");
        assert_eq!(file.compression, info.compression);
        assert_eq!(file.url(), info.url);
        if info.compression == Compression::None {
            assert_eq!(info.file_hash, Some(info.nar_hash));
            assert_eq!(info.file_size, Some(info.nar_size));
        }
    }
}

#[test]
fn real_signatures_verify_and_are_reproduced_exactly() {
    let secrets = secret_keys();
    let publics = public_keys();
    let mut checked = 0;
    for (dir, name, text) in narinfos() {
        let info = NarInfo::parse(&text).unwrap();
        assert!(info.verify_any(&publics), "{dir}/{name}");
        let fp = info.fingerprint();
        for sig in &info.sigs {
            let public = publics.iter().find(|k| k.name() == sig.key_name()).unwrap();
            assert!(public.verify(&fp, sig), "{dir}/{name} {}", sig.key_name());
            let secret = secrets.iter().find(|k| k.name() == sig.key_name()).unwrap();
            assert_eq!(secret.sign(&fp), *sig, "{dir}/{name}: ed25519 is deterministic");
            checked += 1;
        }
        let mut tampered = info.clone();
        tampered.references.reverse();
        tampered.nar_size += u64::from(info.references.len() < 2);
        assert!(!tampered.verify_any(&publics), "{dir}/{name}");
    }
    assert!(checked >= 17, "{checked}");
}

#[test]
fn narinfos_with_two_signatures() {
    let dir_out = read("narinfo/xz/qqavlq6yvg75n8ngnrl00hjnmdnsk9mb.narinfo");
    let info = NarInfo::parse(&dir_out).unwrap();
    let names: Vec<&str> = info.sigs.iter().map(|s| s.key_name()).collect();
    assert_eq!(names, ["test-key-1", "test-key-2"]);
    // The directory output references itself and `leaf`, sorted by base name.
    let refs: Vec<String> = info.references.iter().map(ToString::to_string).collect();
    assert_eq!(
        refs,
        [
            "7qxb8wbwqha95lbfrcj97j6fb8wbywa4-leaf",
            info.store_path.to_string().as_str()
        ]
    );
    for public in public_keys().iter().take(2) {
        assert!(info.verify_any(std::slice::from_ref(public)), "{}", public.name());
    }
    let generated = read("narinfo/generated-key/iwklygyg8nfdn22cfmipjw1q7vchpdrd.narinfo");
    let info = NarInfo::parse(&generated).unwrap();
    assert_eq!(info.sigs.len(), 2);
    assert!(info.verify_any(&public_keys()[2..]));
    assert!(!info.verify_any(&public_keys()[1..2]));
}

#[test]
fn narinfos_agree_with_nix_path_info_json() {
    let json = read("path-info.json");
    for (_, _, text) in narinfos() {
        let info = NarInfo::parse(&text).unwrap();
        let start = json
            .find(&format!("{{\"path\":\"{}\"", info.store_path.to_absolute()))
            .unwrap();
        let entry = &json[start..];
        let entry = &entry[..entry.find('}').unwrap()];
        assert!(
            entry.contains(&format!("\"narHash\":\"{}\"", info.nar_hash.to_sri())),
            "{entry}"
        );
        assert!(
            entry.contains(&format!("\"narSize\":{},", info.nar_size)),
            "{entry}"
        );
        if let Some(ca) = &info.ca {
            assert!(entry.contains(&format!("\"ca\":\"{ca}\"")), "{entry}");
        }
        if let Some(deriver) = &info.deriver {
            assert!(
                entry.contains(&format!("\"deriver\":\"{}\"", deriver.to_absolute())),
                "{entry}"
            );
        }
        let refs: Vec<String> = info
            .references
            .iter()
            .map(|r| format!("\"{}\"", r.to_absolute()))
            .collect();
        assert!(
            entry.contains(&format!("\"references\":[{}]", refs.join(","))),
            "{entry}"
        );
    }
}

#[test]
fn nixbase32_matches_nix() {
    let rows = table("nixbase32-vectors.txt");
    assert!(rows.len() >= 28);
    for row in rows {
        let (bytes, text) = (hex(&row[0]), row[1].as_str());
        assert_eq!(nixbase32::encode(&bytes), text, "{}", row[0]);
        assert_eq!(nixbase32::decode(text).unwrap(), bytes, "{text}");
        assert_eq!(nixbase32::encoded_len(bytes.len()), text.len());
        assert!(nixbase32::is_valid(text));
        if bytes.len() == 20 {
            let hash = StorePathHash::parse(text).unwrap();
            assert_eq!(hash.0[..], bytes[..]);
            assert_eq!(hash.to_string(), text);
            assert_eq!(nixbase32::decode_fixed::<20>(text).unwrap()[..], bytes[..]);
        }
        if bytes.len() == 32 {
            let hash = Sha256Hash::from_nixbase32(text).unwrap();
            assert_eq!(hash.0[..], bytes[..]);
            assert_eq!(hash.to_string(), format!("sha256:{text}"));
            assert_eq!(hash.to_hex(), row[0]);
        }
    }
}

#[test]
fn sha256_forms_match_nix() {
    for row in table("sha256-forms.txt") {
        let [base16, base32, base64, sri] = [&row[0], &row[1], &row[2], &row[3]];
        let hash = Sha256Hash(hex(base16).try_into().unwrap());
        for form in [
            format!("sha256:{base16}"),
            format!("sha256:{base32}"),
            format!("sha256:{base64}"),
            sri.clone(),
        ] {
            assert_eq!(form.parse::<Sha256Hash>().unwrap(), hash, "{form}");
        }
        assert_eq!(hash.to_string(), format!("sha256:{base32}"));
        assert_eq!(&hash.to_sri(), sri);
        assert_eq!(&hash.to_hex(), base16);
    }
    let empty = &table("sha256-forms.txt")[0];
    assert_eq!(Sha256Hash::digest(b"").to_hex(), empty[0]);
}

#[test]
fn real_nar_file_names_parse() {
    let names = table("nar-file-names.txt");
    assert_eq!(names.len(), 13);
    for row in names {
        let name = &row[0];
        let file = NarFile::parse(name).unwrap();
        assert_eq!(&file.file_name(), name);
        assert_eq!(
            Some(file.compression.clone()),
            Compression::from_extension(&name[56..])
        );
    }
}

#[test]
fn generated_key_matches_nix_conversion() {
    // generated.sec came from SigningKey::generate; generated.pub from
    // `nix key convert-secret-to-public < generated.sec`.
    let key = SigningKey::parse(&read("keys/generated.sec")).unwrap();
    assert_eq!(key.public_key().to_string(), read("keys/generated.pub").trim());
    assert_eq!(key.to_secret_string(), read("keys/generated.sec"));
}
