//! Build traces of content-addressed derivations (`realisations/…` for Nix 2.4 to 2.34,
//! `build-trace-v2/…` for 2.35+): pulled through only when a trusted key signed them, kept,
//! served with the cache's own signature, a miss remembered, uploads behind the credentials.
//! The layout 1 document is one Nix 2.8 wrote and signed; no Nix that writes layout 2 (2.35)
//! runs here, so those documents are signed by the tests, after Nix 2.35's source.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::writable::{self, basic, PASSWORD, USER};
use common::{client, send, upstream_key, Proxy, Upstream};
use nixcache_protocol::{BuildTrace, BuildTraceKey, PublicKey, SigningKey};
use reqwest::StatusCode;

/// Written by `nix copy --to file://…` (Nix 2.8.0) of a content-addressed derivation's output,
/// built with `secret-key-files` holding the key whose public half is [`NIX_KEY`].
const NIX_DOC: &str = r#"{"dependentRealisations":{},"id":"sha256:d94f7af9eb726a2f3d6a5b85f1d13d7c7d2683433f442535b28f86ed88635808!out","outPath":"sy2air4ni4an0d59lqnyasgh2ydd4gw6-ca-top","signatures":["test-ca-1:BkdgXMy/ocolPZLAUvf2r6fWqO7skwejQuC3IkEWLwjIEdzXlj9cEtHkurxS7uS0V2rtYG/Xebk8WtUOR/rWAQ=="]}"#;
const NIX_KEY: &str = "test-ca-1:/2SVuZ1YmRCOyriEJ90k0+qX8wM1eSkFTYmh4nFfIjA=";
const NIX_PATH: &str =
    "/realisations/sha256:d94f7af9eb726a2f3d6a5b85f1d13d7c7d2683433f442535b28f86ed88635808!out.doi";
const DRV: &str = "9sgrhzh75qdm6n0b91q0szqr9v0s59ah-ca-top.drv";
const OUT: &str = "sy2air4ni4an0d59lqnyasgh2ydd4gw6-ca-top";

fn key(path: &str) -> BuildTraceKey {
    BuildTraceKey::parse(path.trim_start_matches('/')).unwrap()
}

/// A layout 2 document for `path`, naming `out`, signed by `signer`.
fn v2_doc(path: &str, out: &str, signer: &SigningKey) -> String {
    let mut trace = BuildTrace::parse(&key(path), format!(r#"{{"outPath":"{out}"}}"#).as_bytes()).unwrap();
    trace.add_signature(signer);
    trace.to_json()
}

async fn proxy_key(client: &reqwest::Client, proxy: &Proxy) -> PublicKey {
    PublicKey::parse(send(client.get(proxy.url("/pubkey"))).await.text()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_are_pulled_through_when_trusted_and_served_signed() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    upstream.put(NIX_PATH, NIX_DOC);
    let signer = upstream_key();
    let v2_path = format!("/build-trace-v2/{DRV}/out.doi");
    upstream.put(&v2_path, v2_doc(&v2_path, OUT, &signer));
    let nix_key = PublicKey::parse(NIX_KEY).unwrap();
    let proxy = Proxy::start(
        dir.path(),
        &[&upstream],
        &[signer.public_key(), nix_key.clone()],
        &[],
    )
    .await;
    let client = client();
    let ours = proxy_key(&client, &proxy).await;

    for (path, upstream_signer) in [(NIX_PATH, &nix_key), (v2_path.as_str(), &signer.public_key())] {
        let first = send(client.get(proxy.url(path))).await;
        assert_eq!(first.status, StatusCode::OK, "{path}: {}", first.text());
        assert_eq!(first.header("content-type"), Some("application/json"));
        assert_eq!(first.header("x-cache-status"), Some("MISS"));
        assert_eq!(first.header("cache-control"), Some("public, max-age=300"));
        let trace = BuildTrace::parse(&key(path), &first.body).unwrap();
        assert_eq!(trace.out_path().to_string(), OUT);
        assert!(
            trace.verify_any(std::slice::from_ref(upstream_signer)),
            "{path}: the upstream's signature kept"
        );
        assert!(
            trace.verify_any(std::slice::from_ref(&ours)),
            "{path}: signed by the cache"
        );
        let again = send(client.get(proxy.url(path))).await;
        assert_eq!(again.header("x-cache-status"), Some("HIT"));
        assert_eq!(again.body, first.body);
        assert_eq!(upstream.gets(path), 1, "{path}: asked upstream once");
        let head = send(client.head(proxy.url(path))).await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(
            head.header("content-length"),
            Some(first.body.len().to_string().as_str())
        );
        assert!(head.body.is_empty());
    }
    // Nix 2.32+ sends the `!` as `%21`: the same trace.
    let escaped = send(client.get(proxy.url(&NIX_PATH.replace('!', "%21")))).await;
    assert_eq!(escaped.status, StatusCode::OK);
    assert_eq!(escaped.header("x-cache-status"), Some("HIT"));
    // The layout 1 document is served as Nix wrote it, with one more signature.
    let served: serde_json::Value = serde_json::from_slice(&escaped.body).unwrap();
    let sigs = served["signatures"].as_array().unwrap();
    assert_eq!(sigs.len(), 2);
    assert!(
        escaped
            .text()
            .starts_with(r#"{"dependentRealisations":{},"id":"sha256:d94f"#),
        "{}",
        escaped.text()
    );
    // Kept sharded by the derivation's hash.
    assert!(proxy.stored_files().iter().any(|p| p.ends_with(
        "realisations/d9/d94f7af9eb726a2f3d6a5b85f1d13d7c7d2683433f442535b28f86ed88635808!out.doi"
    )));
    let metrics = send(client.get(proxy.url("/metrics"))).await;
    assert!(
        metrics
            .text()
            .contains(r#"nixcache_cache_lookups_total{kind="build_trace",result="hit"}"#),
        "{}",
        metrics.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_forged_and_malformed_traces_are_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let trusted = upstream_key();
    let stranger = SigningKey::generate("stranger-1").unwrap();
    // Signed by a key nobody trusts, by a trusted key but for another output (a replayed
    // signature), with the store path changed after signing, and not a trace at all.
    let untrusted = format!("/build-trace-v2/{DRV}/out.doi");
    upstream.put(&untrusted, v2_doc(&untrusted, OUT, &stranger));
    let replayed = format!("/build-trace-v2/{DRV}/dev.doi");
    upstream.put(
        &replayed,
        v2_doc(&format!("/build-trace-v2/{DRV}/lib.doi"), OUT, &trusted),
    );
    let forged = NIX_PATH;
    upstream.put(
        forged,
        NIX_DOC.replace(
            "sy2air4ni4an0d59lqnyasgh2ydd4gw6",
            "00000000000000000000000000000000",
        ),
    );
    let garbage = NIX_PATH.replace("!out", "!doc");
    upstream.put(&garbage, "<html>not found</html>");
    let nix_key = PublicKey::parse(NIX_KEY).unwrap();
    let proxy = Proxy::start(dir.path(), &[&upstream], &[trusted.public_key(), nix_key], &[]).await;
    let client = client();

    for path in [untrusted.as_str(), replayed.as_str(), forged] {
        for _ in 0..2 {
            let got = send(client.get(proxy.url(path))).await;
            assert_eq!(got.status, StatusCode::NOT_FOUND, "{path}: {}", got.text());
            assert!(got
                .header("cache-control")
                .unwrap()
                .starts_with("public, max-age="));
        }
        assert_eq!(upstream.gets(path), 1, "{path}: the miss is remembered");
    }
    let got = send(client.get(proxy.url(&garbage))).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text());
    assert!(proxy.stored_files().is_empty(), "{:?}", proxy.stored_files());

    for bad in [
        "/realisations/sha256:abc!out.doi",
        "/realisations/d94f7af9eb726a2f3d6a5b85f1d13d7c7d2683433f442535b28f86ed88635808!out.doi",
        "/build-trace-v2/not-a-drv/out.doi",
        &format!("/build-trace-v2/{DRV}/out"),
        &format!("/build-trace-v2/{DRV}/o%2Fx.doi"),
    ] {
        let got = send(client.get(proxy.url(bad))).await;
        assert_eq!(got.status, StatusCode::BAD_REQUEST, "{bad}: {}", got.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_kept_never_replaced_and_served_signed() {
    let w = writable::start(&["--allow-put", "--max-upload-size", "64K"]).await;
    let auth = basic(USER, PASSWORD);
    let v2_path = format!("/build-trace-v2/{DRV}/out.doi");
    let unsigned = format!(r#"{{"outPath":"{OUT}","signatures":[]}}"#);

    assert_eq!(
        w.put(NIX_PATH, NIX_DOC, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    for (path, doc) in [
        (NIX_PATH, NIX_DOC.to_owned()),
        (v2_path.as_str(), unsigned.clone()),
    ] {
        let put = w.put(path, doc.clone(), Some(&auth)).await;
        assert_eq!(put.status, StatusCode::CREATED, "{path}: {}", put.text());
        assert_eq!(
            w.put(path, doc, Some(&auth)).await.status,
            StatusCode::OK,
            "{path}: the same again"
        );
        let got = w.get(path).await;
        assert_eq!(got.status, StatusCode::OK);
        let trace = BuildTrace::parse(&key(path), &got.body).unwrap();
        let ours = proxy_key(&w.client, &w.proxy).await;
        assert!(trace.verify_any(&[ours]), "{path}: {}", got.text());
    }
    // Another store path for an output held here is a conflict; the first one stays.
    let other = unsigned.replace(
        "sy2air4ni4an0d59lqnyasgh2ydd4gw6",
        "00000000000000000000000000000000",
    );
    let put = w.put(&v2_path, other, Some(&auth)).await;
    assert_eq!(put.status, StatusCode::CONFLICT, "{}", put.text());
    assert!(w.get(&v2_path).await.text().contains(OUT));
    // Nix 2.32+ may send it compressed; a document for another id or not JSON is refused.
    let lib = NIX_PATH.replace("!out", "!lib");
    let request = w
        .client
        .put(w.proxy.url(&lib))
        .header("authorization", &auth)
        .header("content-encoding", "zstd")
        .body(zstd::encode_all(NIX_DOC.replace("!out", "!lib").as_bytes(), 3).unwrap());
    assert_eq!(send(request).await.status, StatusCode::CREATED);
    let dev = NIX_PATH.replace("!out", "!dev");
    for doc in [NIX_DOC, "{", "[]"] {
        let put = w.put(&dev, doc, Some(&auth)).await;
        assert_eq!(put.status, StatusCode::BAD_REQUEST, "{doc}: {}", put.text());
    }
    assert_eq!(w.get(&dev).await.status, StatusCode::NOT_FOUND);
    let put = w.put(&dev, vec![b' '; 65 << 10], Some(&auth)).await;
    assert_eq!(put.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", put.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_sharing_a_hash_cannot_poison_and_writes_never_replace() {
    // A miss for a made-up derivation name with a real one's hash is not the real one's miss.
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let signer = upstream_key();
    let real = format!("/build-trace-v2/{DRV}/out.doi");
    upstream.put(&real, v2_doc(&real, OUT, &signer));
    let proxy = Proxy::start(dir.path(), &[&upstream], &[signer.public_key()], &[]).await;
    let client = client();
    let fake = "/build-trace-v2/9sgrhzh75qdm6n0b91q0szqr9v0s59ah-zzz.drv/out.doi";
    assert_eq!(
        send(client.get(proxy.url(fake))).await.status,
        StatusCode::NOT_FOUND
    );
    let got = send(client.get(proxy.url(&real))).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());

    // Uploads racing for one output: one is kept, the other is a conflict, never both 201.
    let w = writable::start(&["--allow-put"]).await;
    let auth = basic(USER, PASSWORD);
    let docs: Vec<String> = (0..8)
        .map(|i| format!(r#"{{"outPath":"{}{i}-ca-top"}}"#, &OUT[..31]))
        .collect();
    let puts = docs.iter().map(|doc| w.put(&real, doc.clone(), Some(&auth)));
    let statuses: Vec<StatusCode> = futures::future::join_all(puts)
        .await
        .iter()
        .map(|g| g.status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::CREATED).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| [StatusCode::CREATED, StatusCode::CONFLICT].contains(s)),
        "{statuses:?}"
    );

    // A document at the size limit is kept and served (its stored form is larger).
    let sigs: Vec<String> = (0..64)
        .map(|i| {
            let signer = SigningKey::generate(&format!("k{i}-{}", "n".repeat(3600))).unwrap();
            let mut t =
                BuildTrace::parse(&key(&real), format!(r#"{{"outPath":"{OUT}"}}"#).as_bytes()).unwrap();
            t.add_signature(&signer);
            format!("\"{}\"", t.signatures()[0])
        })
        .collect();
    let big = format!(r#"{{"outPath":"{OUT}","signatures":[{}]}}"#, sigs.join(","));
    assert!(big.len() > 200 << 10 && big.len() < 256 << 10, "{}", big.len());
    let big_path = format!("/build-trace-v2/{DRV}/big.doi");
    let put = w.put(&big_path, big, Some(&auth)).await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());
    assert_eq!(w.get(&big_path).await.status, StatusCode::OK);
}
