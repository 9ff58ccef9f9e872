//! `GET /`: the nix.conf lines and what the cache holds, as HTML for a browser and as plain text
//! for curl; the client's Host header cannot inject markup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, get, send, upstream_key, Proxy, Upstream};
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_landing_page_says_how_to_use_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(10).await;
    let key = upstream_key();
    let proxy = Proxy::start(dir.path(), &[&upstream], &[key.public_key()], &[]).await;
    let client = client();
    let public_key = get(&client, &proxy.url("/pubkey")).await.text().trim().to_owned();
    let address = proxy.url("");
    let address = address.trim_end_matches('/');

    let text = send(client.get(proxy.url("/")).header("accept", "*/*")).await;
    assert_eq!(text.status, StatusCode::OK);
    assert_eq!(text.header("content-type"), Some("text/plain; charset=utf-8"));
    let body = text.text();
    assert!(body.contains(&format!("substituters = {address}\n")), "{body}");
    assert!(
        body.contains(&format!("trusted-public-keys = {public_key}\n")),
        "{body}"
    );
    assert!(body.contains("upstream caches: 1 (0 down)\n"), "{body}");
    assert!(body.contains("uploads (nix copy --to): off"), "{body}");
    assert!(
        !body.contains(&upstream.url),
        "the page shows an upstream URL: {body}"
    );

    let html = send(
        client
            .get(proxy.url("/"))
            .header("accept", "text/html,application/xhtml+xml")
            .header("x-forwarded-proto", "https"),
    )
    .await;
    assert_eq!(html.header("content-type"), Some("text/html; charset=utf-8"));
    let body = html.text();
    let host = address.trim_start_matches("http://");
    assert!(
        body.contains(&format!("substituters = https://{host}\n")),
        "{body}"
    );
    assert!(body.contains(&public_key), "{body}");

    let hostile = send(
        client
            .get(proxy.url("/"))
            .header("accept", "text/html")
            .header("host", "<script>x</script>"),
    )
    .await;
    let body = hostile.text();
    assert!(!body.contains("<script>"), "{body}");
    assert!(body.contains("&lt;script&gt;"), "{body}");
}
