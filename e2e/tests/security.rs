//! Malformed and hostile requests are answered by the proxy itself (400, 404,
//! 405) and never reach the upstream.

use anyhow::Result;
use nixcache_e2e::http::raw_request;
use nixcache_e2e::util::hash_part;
use nixcache_e2e::{nix_available, Proxy, ProxyOptions, TestUpstream, UpstreamCache};

const SALT: &str = "e2e";

/// Requests that must be 400: malformed store path hashes and NAR names.
fn bad_requests(hash: &str, file_hash: &str) -> Vec<String> {
    let mut e_hash = hash.to_string();
    e_hash.replace_range(0..1, "e"); // 'e' is not in Nix's base-32
    vec![
        "/..%2f..%2fetc%2fpasswd.narinfo".to_string(),
        format!("/{}.narinfo", "A".repeat(32)),
        format!("/{}.narinfo", hash.to_uppercase()),
        format!("/{e_hash}.narinfo"),
        format!("/{}.narinfo", &hash[..31]),
        format!("/{hash}0.narinfo"),
        "/nar/../x".to_string(),
        "/nar/..%2f..%2fetc%2fpasswd.nar.xz".to_string(),
        "/nar/zzz.nar.xz".to_string(),
        format!("/nar/{}.nar.zst", file_hash.to_uppercase()),
        format!("/nar/{file_hash}.nar.gz"),
        format!("/nar/{}.nar.zst", &file_hash[..51]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_without_asking_upstream() -> Result<()> {
    if !nix_available() {
        return Ok(());
    }
    let cache = UpstreamCache::get("zstd", SALT)?;
    let upstream = TestUpstream::start(&cache.dir)?;
    let proxy = Proxy::start(ProxyOptions::new(&upstream.url, &cache.public_key)).await?;
    upstream.reset_stats();
    let hash = hash_part(&cache.root).to_string();
    let file_hash = cache
        .narinfo_for(&cache.root)?
        .file_hash()?
        .trim_start_matches("sha256:")
        .to_string();
    let mut wrong = Vec::new();
    let mut check = |method: &str, target: &str, status: u16, got: u16| {
        if got != status {
            wrong.push(format!("{method} {target}: {got}, expected {status}"));
        }
    };

    for target in bad_requests(&hash, &file_hash) {
        check(
            "GET",
            &target,
            400,
            raw_request(proxy.addr, "GET", &target).await?.status,
        );
    }
    for target in ["/foo", "/foo/bar", "/static/app.js", "/api/v1/status"] {
        check(
            "GET",
            target,
            404,
            raw_request(proxy.addr, "GET", target).await?.status,
        );
    }
    let narinfo = format!("/{hash}.narinfo");
    let nar = format!("/nar/{file_hash}.nar.zst");
    for target in [narinfo.as_str(), nar.as_str(), "/nix-cache-info"] {
        for method in ["PUT", "DELETE"] {
            check(
                method,
                target,
                405,
                raw_request(proxy.addr, method, target).await?.status,
            );
        }
    }
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
    let stats = upstream.stats();
    let reached = stats.paths_except(&["/nix-cache-info"]);
    assert!(reached.is_empty(), "these reached the upstream: {reached:?}");
    Ok(())
}
