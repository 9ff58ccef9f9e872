//! Load for hits answered with a redirect (`--s3-redirect`): each client asks the replica,
//! follows the 307 to the bucket and reads the body there, back to back, as Nix does.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use futures::StreamExt;

use super::loadgen::Load;

fn client(follow: bool) -> Result<reqwest::Client> {
    let policy = if follow {
        reqwest::redirect::Policy::limited(1)
    } else {
        reqwest::redirect::Policy::none()
    };
    Ok(reqwest::Client::builder().no_proxy().redirect(policy).build()?)
}

/// The replica answers `url` with a 307, and the bucket with `expected`.
pub async fn check(url: &str, expected: &[u8]) -> Result<()> {
    let first = client(false)?.get(url).send().await?;
    ensure!(
        first.status() == 307,
        "GET {url}: {} instead of a redirect",
        first.status()
    );
    let body = client(true)?
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    ensure!(body.as_ref() == expected, "the redirected body differs");
    Ok(())
}

/// `conns` clients downloading `url` (of `length` bytes) through its redirect for `duration`.
pub async fn load(url: &str, length: u64, conns: usize, duration: Duration) -> Result<Load> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut clients = Vec::new();
    for _ in 0..conns {
        let (client, url) = (client(true)?, url.to_owned());
        clients.push(tokio::spawn(async move {
            one_client(client, &url, length, deadline).await
        }));
    }
    let mut load = Load {
        bytes: 0,
        requests: 0,
        elapsed_s: 0.0,
        ttlb_ms: Vec::new(),
    };
    for joined in clients {
        let (bytes, ttlb_ms) = joined.await.context("a load client panicked")??;
        load.bytes += bytes;
        load.requests += ttlb_ms.len() as u64;
        load.ttlb_ms.extend(ttlb_ms);
    }
    load.elapsed_s = started.elapsed().as_secs_f64();
    Ok(load)
}

/// Bytes read and each download's time to last byte.
async fn one_client(
    client: reqwest::Client,
    url: &str,
    length: u64,
    deadline: Instant,
) -> Result<(u64, Vec<f64>)> {
    let (mut bytes, mut ttlb_ms) = (0, Vec::new());
    while Instant::now() < deadline {
        let began = Instant::now();
        let response = client.get(url).send().await?.error_for_status()?;
        let mut body = response.bytes_stream();
        let mut got = 0u64;
        while let Some(chunk) = body.next().await {
            got += chunk?.len() as u64;
        }
        ensure!(got == length, "a redirected download got {got} of {length} bytes");
        bytes += got;
        ttlb_ms.push(began.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((bytes, ttlb_ms))
}
