//! `Content-Encoding` by negotiation: narinfos, listings, logs, build traces and NARs stored
//! without compression are encoded (zstd, br, gzip) only for a request whose `Accept-Encoding`
//! lists one, decode to exactly the stored bytes, and say `Vary: Accept-Encoding`; a request
//! without the header (Nix 2.8), a range, a `HEAD`, or an already compressed NAR gets the bytes
//! as stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;

use common::data::{sample_nar, store_path, Entry};
use common::{client, send, upstream_key, Got, Proxy, Upstream};
use nixcache_protocol::Compression;
use reqwest::StatusCode;

fn decoded(got: &Got) -> Vec<u8> {
    let body = &got.body[..];
    let mut out = Vec::new();
    match got.header("content-encoding") {
        None => out.extend_from_slice(body),
        Some("zstd") => out = zstd::decode_all(body).unwrap(),
        Some("gzip") => {
            flate2::read::GzDecoder::new(body).read_to_end(&mut out).unwrap();
        }
        Some("br") => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some(other) => panic!("unexpected encoding {other}"),
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_only_when_asked_and_byte_identical_once_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    // A NAR stored without compression, and one with: only the first is worth encoding.
    let plain = Entry::new("plain-nar", sample_nar(7, 300_000), Compression::None, &key);
    let packed = Entry::new("packed-nar", sample_nar(8, 300_000), Compression::Zstd, &key);
    // Over 16 MiB: Nix resumes it with a Range only when it was not encoded.
    let large = Entry::new("large-nar", sample_nar(9, 17 << 20), Compression::None, &key);
    upstream.add(&plain);
    upstream.add(&packed);
    upstream.add(&large);
    let log_path = format!("/log/{}", store_path("encoded.drv"));
    let log: Vec<u8> = (0..5000)
        .flat_map(|i| format!("step {i}\n").into_bytes())
        .collect();
    upstream.put(&log_path, log.clone());
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let client = client();
    let get = |path: String, accept: Option<&'static str>| {
        let mut request = client.get(proxy.url(&path));
        if let Some(accept) = accept {
            request = request.header("accept-encoding", accept);
        }
        send(request)
    };

    // Narinfos first (a NAR is known once its narinfo is): the same rule as for NARs.
    let narinfo = get(plain.narinfo_path(), Some("zstd")).await;
    assert_eq!(narinfo.status, StatusCode::OK);
    // Under 4 KiB: not worth encoding on the hit path.
    assert_eq!(narinfo.header("content-encoding"), None);
    let text = String::from_utf8(decoded(&narinfo)).unwrap();
    assert!(
        text.contains(&format!("StorePath: {}", plain.store_path.to_absolute())),
        "{text}"
    );
    assert_eq!(get(packed.narinfo_path(), None).await.status, StatusCode::OK);

    let nar_path = format!("/nar/{}", plain.file_name());
    // Fetched once, then a hit: both kinds of answer are encoded alike.
    for _ in 0..2 {
        for (accept, expected) in [
            (Some("gzip, deflate, br, zstd"), Some("zstd")),
            (Some("gzip;q=0.5, br"), Some("br")),
            (Some("gzip"), Some("gzip")),
            (Some("identity"), None),
            (Some("compress, deflate"), None),
            (None, None),
        ] {
            let got = get(nar_path.clone(), accept).await;
            assert_eq!(got.status, StatusCode::OK, "{}", got.text());
            assert_eq!(got.header("content-encoding"), expected, "{accept:?}");
            assert_eq!(decoded(&got), plain.nar, "{accept:?}");
            assert!(got
                .header("vary")
                .is_some_and(|v| v.eq_ignore_ascii_case("accept-encoding")));
            match expected {
                Some(_) => {
                    assert!(got.body.len() < plain.nar.len());
                    assert!(
                        got.header("etag").unwrap().starts_with("W/"),
                        "{:?}",
                        got.header("etag")
                    );
                    assert_eq!(got.header("accept-ranges"), None);
                }
                None => {
                    assert_eq!(
                        got.header("content-length"),
                        Some(plain.nar.len().to_string().as_str())
                    );
                    assert!(!got.header("etag").unwrap().starts_with("W/"));
                }
            }
        }
    }
    // A range, a HEAD and a compressed NAR go as they are.
    let part = send(
        client
            .get(proxy.url(&nar_path))
            .header("accept-encoding", "zstd")
            .header("range", "bytes=0-99"),
    )
    .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.header("content-encoding"), None);
    assert_eq!(&part.body[..], &plain.nar[..100]);
    let head = send(
        client
            .head(proxy.url(&nar_path))
            .header("accept-encoding", "zstd"),
    )
    .await;
    assert_eq!(head.header("content-encoding"), None);
    assert_eq!(
        head.header("content-length"),
        Some(plain.nar.len().to_string().as_str())
    );
    let zst = get(format!("/nar/{}", packed.file_name()), Some("zstd, gzip")).await;
    assert_eq!(zst.status, StatusCode::OK);
    assert_eq!(zst.header("content-encoding"), None);
    assert_eq!(zst.header("vary"), None);

    assert_eq!(get(large.narinfo_path(), None).await.status, StatusCode::OK);
    let big = get(format!("/nar/{}", large.file_name()), Some("zstd")).await;
    assert_eq!(big.status, StatusCode::OK);
    assert_eq!(big.header("content-encoding"), None);
    assert_eq!(big.header("accept-ranges"), Some("bytes"));
    assert_eq!(big.body.len(), large.nar.len());

    // Logs: the same rule.
    let log_got = get(log_path.clone(), Some("br")).await;
    assert_eq!(log_got.header("content-encoding"), Some("br"));
    assert_eq!(decoded(&log_got), log);
    assert!(log_got.body.len() < log.len() / 4);
    assert_eq!(get(log_path, None).await.body, log);
}

/// Whatever would be encoded says so in every answer (`HEAD`, `206`, `304`); a `304` carries the
/// tag its `200` would have; the encoded answers are counted; `--content-encoding off` encodes
/// nothing and says no `Vary`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_varies_alike_and_off_turns_it_off() {
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let plain = Entry::new("varying-nar", sample_nar(11, 300_000), Compression::None, &key);
    upstream.add(&plain);
    let nar_path = format!("/nar/{}", plain.file_name());
    let client = client();
    let vary = |got: &Got| got.header("vary").map(str::to_ascii_lowercase);

    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let url = proxy.url(&nar_path);
    // Before the NAR is stored (known by its narinfo only) and after.
    assert_eq!(
        send(client.get(proxy.url(&plain.narinfo_path()))).await.status,
        StatusCode::OK
    );
    let tag = format!("\"{}\"", plain.file_name());
    let revalidate = |accept: Option<&'static str>, tag: String| {
        let mut request = client.get(&url).header("if-none-match", tag);
        if let Some(accept) = accept {
            request = request.header("accept-encoding", accept);
        }
        send(request)
    };
    let before = revalidate(Some("zstd"), format!("W/{tag}")).await;
    assert_eq!(before.status, StatusCode::NOT_MODIFIED);
    assert_eq!(vary(&before).as_deref(), Some("accept-encoding"));
    assert_eq!(before.header("etag"), Some(format!("W/{tag}").as_str()));

    let encoded = send(client.get(&url).header("accept-encoding", "gzip")).await;
    assert_eq!(encoded.header("content-encoding"), Some("gzip"));
    assert_eq!(decoded(&encoded), plain.nar);
    let weak = encoded.header("etag").unwrap().to_owned();
    assert_eq!(weak, format!("W/{tag}"));
    for (accept, etag) in [(Some("gzip"), weak.as_str()), (None, tag.as_str())] {
        let again = revalidate(accept, weak.clone()).await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{accept:?}");
        assert_eq!(vary(&again).as_deref(), Some("accept-encoding"), "{accept:?}");
        assert_eq!(again.header("etag"), Some(etag), "{accept:?}");
    }
    let head = send(client.head(&url).header("accept-encoding", "gzip")).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-encoding"), None);
    assert_eq!(vary(&head).as_deref(), Some("accept-encoding"));
    assert_eq!(
        head.header("etag"),
        Some(weak.as_str()),
        "the tag its GET carries"
    );
    let plain_head = send(client.head(&url)).await;
    assert_eq!(plain_head.header("etag"), Some(tag.as_str()));
    let part = send(
        client
            .get(&url)
            .header("accept-encoding", "gzip")
            .header("range", "bytes=10-19"),
    )
    .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(vary(&part).as_deref(), Some("accept-encoding"));
    assert_eq!(&part.body[..], &plain.nar[10..20]);
    let metrics = send(client.get(proxy.url("/metrics"))).await.text().to_owned();
    assert!(
        metrics.contains("nixcache_http_encoded_responses_total{encoding=\"gzip\"} 1"),
        "{metrics}"
    );
    drop(proxy);

    let dir = tempfile::tempdir().unwrap();
    let off = Proxy::start(
        dir.path(),
        &[&upstream],
        &[key.public_key()],
        &["--content-encoding", "off"],
    )
    .await;
    assert_eq!(
        send(client.get(off.url(&plain.narinfo_path()))).await.status,
        StatusCode::OK
    );
    for _ in 0..2 {
        let got = send(
            client
                .get(off.url(&nar_path))
                .header("accept-encoding", "zstd, br, gzip"),
        )
        .await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.header("content-encoding"), None);
        assert_eq!(vary(&got), None);
        assert_eq!(got.body, plain.nar);
        assert_eq!(got.header("etag"), Some(tag.as_str()));
    }
    let metrics = send(client.get(off.url("/metrics"))).await.text().to_owned();
    assert!(
        !metrics.contains("nixcache_http_encoded_responses_total{"),
        "{metrics}"
    );
}
