//! Self-tests of TestUpstream's HTTP behaviour on a small hand-made cache
//! directory (no Nix needed).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use nixcache_e2e::http::{client, raw_request};
use nixcache_e2e::{Faults, TestUpstream};
use reqwest::header;
use reqwest::StatusCode;

const NAR: &str = "/nar/0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73.nar.xz";
const NARINFO: &str = "/0ni3zjzv7bbylb4mbj4i909dfkwc3cky.narinfo";
const NAR_LEN: usize = 1 << 20;
const CACHE_INFO: &str = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n";

fn nar_bytes() -> Vec<u8> {
    (0..NAR_LEN).map(|i| (i * 7 % 251) as u8).collect()
}

fn make_cache(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("nar"))?;
    std::fs::write(dir.join("nix-cache-info"), CACHE_INFO)?;
    std::fs::write(
        dir.join(&NARINFO[1..]),
        "StorePath: /nix/store/0ni3zjzv7bbylb4mbj4i909dfkwc3cky-x\n",
    )?;
    std::fs::write(dir.join(&NAR[1..]), nar_bytes())?;
    std::fs::write(dir.parent().unwrap_or(dir).join("secret"), "outside the cache")?;
    Ok(())
}

fn start() -> Result<(tempfile::TempDir, TestUpstream)> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("cache");
    make_cache(&dir)?;
    let upstream = TestUpstream::start(&dir)?;
    Ok((tmp, upstream))
}

fn header_of(response: &reqwest::Response, name: header::HeaderName) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn serves_files_with_length_and_nix_content_types() -> Result<()> {
    let (_tmp, upstream) = start()?;
    let http = client();
    let info = http.get(upstream.url_for("/nix-cache-info")).send().await?;
    assert_eq!(info.status(), StatusCode::OK);
    assert_eq!(header_of(&info, header::CONTENT_TYPE), "text/x-nix-cache-info");
    assert_eq!(
        header_of(&info, header::CONTENT_LENGTH),
        CACHE_INFO.len().to_string()
    );
    let narinfo = http.get(upstream.url_for(NARINFO)).send().await?;
    assert_eq!(header_of(&narinfo, header::CONTENT_TYPE), "text/x-nix-narinfo");
    let head = http.head(upstream.url_for(NAR)).send().await?;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header_of(&head, header::CONTENT_LENGTH), NAR_LEN.to_string());
    assert_eq!(header_of(&head, header::CONTENT_TYPE), "application/x-nix-nar");
    assert_eq!(header_of(&head, header::ACCEPT_RANGES), "bytes");
    let get = http.get(upstream.url_for(NAR)).send().await?;
    assert_eq!(header_of(&get, header::CONTENT_LENGTH), NAR_LEN.to_string());
    assert_eq!(get.bytes().await?.as_ref(), nar_bytes().as_slice());
    Ok(())
}

#[tokio::test]
async fn answers_single_ranges() -> Result<()> {
    let (_tmp, upstream) = start()?;
    let http = client();
    let all = nar_bytes();
    for (range, first, last) in [
        ("bytes=0-9", 0, 9),
        ("bytes=1000-", 1000, NAR_LEN - 1),
        ("bytes=-5", NAR_LEN - 5, NAR_LEN - 1),
    ] {
        let response = http
            .get(upstream.url_for(NAR))
            .header(header::RANGE, range)
            .send()
            .await?;
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header_of(&response, header::CONTENT_RANGE),
            format!("bytes {first}-{last}/{NAR_LEN}")
        );
        assert_eq!(response.bytes().await?.as_ref(), &all[first..=last], "{range}");
    }
    let past = http
        .get(upstream.url_for(NAR))
        .header(header::RANGE, format!("bytes={NAR_LEN}-"))
        .send()
        .await?;
    assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        header_of(&past, header::CONTENT_RANGE),
        format!("bytes */{NAR_LEN}")
    );
    Ok(())
}

#[tokio::test]
async fn refuses_listings_traversal_and_writes() -> Result<()> {
    let (_tmp, upstream) = start()?;
    for target in [
        "/",
        "/nar",
        "/nar/",
        "/missing.narinfo",
        "/../secret",
        "/nar/../../secret",
        "/%2e%2e/secret",
        "//etc/passwd",
    ] {
        let response = raw_request(upstream.addr, "GET", target).await?;
        assert_eq!(response.status, 404, "GET {target}: {}", response.head);
        assert!(
            response.head.to_ascii_lowercase().contains("content-length"),
            "{}",
            response.head
        );
    }
    for method in ["PUT", "DELETE", "POST"] {
        assert_eq!(
            raw_request(upstream.addr, method, NARINFO).await?.status,
            405,
            "{method}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn counts_gets_and_heads_separately() -> Result<()> {
    let (_tmp, upstream) = start()?;
    let http = client();
    http.get(upstream.url_for(NARINFO)).send().await?.bytes().await?;
    http.get(upstream.url_for(NARINFO)).send().await?.bytes().await?;
    http.head(upstream.url_for(NARINFO)).send().await?;
    http.put(upstream.url_for(NAR)).send().await?;
    let stats = upstream.stats();
    assert_eq!(
        (stats.get(NARINFO), stats.head(NARINFO), stats.get(NAR)),
        (2, 1, 0)
    );
    assert_eq!((stats.total(), stats.total_gets()), (4, 2));
    assert_eq!(stats.paths_except(&[NARINFO]), vec![NAR.to_string()]);
    upstream.reset_stats();
    assert_eq!(upstream.stats().total(), 0);
    Ok(())
}

#[tokio::test]
async fn fails_the_first_requests_of_matching_paths() -> Result<()> {
    let (_tmp, upstream) = start()?;
    let http = client();
    upstream.set_faults(Faults {
        fail_first_n: 2,
        fail_status: 503,
        only_paths_with_suffix: Some(".narinfo".into()),
        ..Faults::default()
    });
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            http.get(upstream.url_for(NARINFO))
                .send()
                .await?
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [503, 503, 200]);
    assert_eq!(
        http.get(upstream.url_for(NAR)).send().await?.status(),
        StatusCode::OK
    );
    assert_eq!(upstream.stats().faults, 2);
    upstream.clear_faults();
    assert_eq!(
        http.get(upstream.url_for(NARINFO)).send().await?.status(),
        StatusCode::OK
    );
    Ok(())
}

#[tokio::test]
async fn delays_and_paces_bodies() -> Result<()> {
    let (_tmp, upstream) = start()?;
    let http = client();
    upstream.set_faults(Faults {
        delay: Duration::from_millis(300),
        ..Faults::default()
    });
    let t0 = Instant::now();
    http.get(upstream.url_for(NARINFO)).send().await?.bytes().await?;
    assert!(t0.elapsed() >= Duration::from_millis(300));
    upstream.set_faults(Faults {
        rate_bytes_per_s: 4 << 20,
        ..Faults::default()
    });
    let t0 = Instant::now();
    let body = http.get(upstream.url_for(NAR)).send().await?.bytes().await?;
    let took = t0.elapsed();
    assert_eq!(body.as_ref(), nar_bytes().as_slice());
    assert!(
        took >= Duration::from_millis(230) && took < Duration::from_secs(3),
        "1 MiB at 4 MiB/s took {took:?}"
    );
    Ok(())
}

#[tokio::test]
async fn truncates_and_corrupts_bodies() -> Result<()> {
    let (_tmp, upstream) = start()?;
    let http = client();
    upstream.set_faults(Faults {
        truncate: true,
        ..Faults::default()
    });
    let response = http.get(upstream.url_for(NAR)).send().await?;
    assert_eq!(header_of(&response, header::CONTENT_LENGTH), NAR_LEN.to_string());
    assert!(response.bytes().await.is_err(), "a truncated body must fail");
    upstream.set_faults(Faults {
        corrupt: true,
        ..Faults::default()
    });
    let body = http.get(upstream.url_for(NAR)).send().await?.bytes().await?;
    let diffs: Vec<usize> = body
        .iter()
        .zip(nar_bytes())
        .enumerate()
        .filter(|(_, (a, b))| **a != *b)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(diffs, vec![NAR_LEN / 2]);
    assert_eq!(upstream.stats().faults, 2);
    Ok(())
}

#[tokio::test]
async fn body_faults_can_spare_the_retries() -> Result<()> {
    let (_tmp, upstream) = start()?;
    let http = client();
    upstream.set_faults(Faults {
        truncate: true,
        body_faults_first_n: 1,
        ..Faults::default()
    });
    let first = http.get(upstream.url_for(NAR)).send().await?;
    assert!(first.bytes().await.is_err(), "the first body must be cut");
    for _ in 0..2 {
        let again = http.get(upstream.url_for(NAR)).send().await?.bytes().await?;
        assert_eq!(again, nar_bytes(), "a later request must get the whole body");
    }
    assert_eq!(upstream.stats().faults, 1);
    Ok(())
}

#[tokio::test]
async fn stop_refuses_new_and_cuts_open_connections() -> Result<()> {
    let (_tmp, mut upstream) = start()?;
    upstream.set_faults(Faults {
        rate_bytes_per_s: 256 << 10,
        ..Faults::default()
    });
    let slow = client().get(upstream.url_for(NAR)).send().await?;
    let addr = upstream.addr;
    let t0 = Instant::now();
    upstream.stop();
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        t0.elapsed()
    );
    assert!(slow.bytes().await.is_err(), "an open download must be cut");
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert_eq!(
        refused.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionRefused)
    );
    Ok(())
}

/// TestUpstream runs on its own thread and runtime: a blocking test works.
#[test]
fn serves_a_plain_blocking_test() -> Result<()> {
    use std::io::{Read, Write};
    let (_tmp, upstream) = start()?;
    let mut stream = std::net::TcpStream::connect(upstream.addr)?;
    write!(
        stream,
        "GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(CACHE_INFO), "{answer}");
    assert_eq!(upstream.stats().get("/nix-cache-info"), 1);
    Ok(())
}
