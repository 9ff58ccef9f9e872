//! HTTP helpers for tests: a plain reqwest client, narinfo fetching, and raw
//! requests for paths an URL parser would normalise (`/nar/../x`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::narinfo::NarInfo;
use crate::util::hash_part;

/// A reqwest client that ignores proxy settings from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// GET `url`: the status and the whole body.
pub async fn get(url: &str) -> Result<(reqwest::StatusCode, bytes::Bytes)> {
    let response = client()
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    Ok((
        status,
        response
            .bytes()
            .await
            .with_context(|| format!("GET {url}: body"))?,
    ))
}

/// GET `<base>/<hash>.narinfo` for `store_path`; must be 200.
pub async fn get_narinfo(base: &str, store_path: &str) -> Result<NarInfo> {
    let url = format!("{base}/{}.narinfo", hash_part(store_path));
    let (status, body) = get(&url).await?;
    ensure!(status == reqwest::StatusCode::OK, "GET {url}: {status}");
    NarInfo::parse(std::str::from_utf8(&body)?)
}

/// An answer to a raw request.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

/// Sends `METHOD target HTTP/1.1` exactly as given (no normalisation) with
/// `Connection: close`, and reads the whole answer.
pub async fn raw_request(addr: SocketAddr, method: &str, target: &str) -> Result<RawResponse> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .context("raw request timed out")??;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    let Some(status) = status else {
        bail!("bad status line in {head:?}")
    };
    Ok(RawResponse {
        status,
        head,
        body: answer[split + 4..].to_vec(),
    })
}

/// Reads a body to its end, hashing as it goes (for bodies too big to keep
/// 16 times over): its hex sha256 and length.
pub async fn body_sha256(response: reqwest::Response) -> Result<(String, u64)> {
    use futures::StreamExt;
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut len = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("reading a body")?;
        len += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let hex = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((hex, len))
}

/// Reads a body to its end, comparing it with `expected` as it goes
/// (byte-equal bodies have equal hashes; comparing is far cheaper than
/// hashing in a debug build). An error names the first differing offset.
pub async fn body_matches(response: reqwest::Response, expected: &[u8]) -> Result<()> {
    use futures::StreamExt;
    let mut offset = 0usize;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("reading a body at offset {offset}"))?;
        let end = offset + chunk.len();
        ensure!(
            end <= expected.len(),
            "body is longer than the expected {} bytes",
            expected.len()
        );
        if chunk.as_ref() != &expected[offset..end] {
            let at = chunk
                .iter()
                .zip(&expected[offset..end])
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            bail!("body differs from the expected bytes at offset {}", offset + at);
        }
        offset = end;
    }
    ensure!(
        offset == expected.len(),
        "body has {offset} bytes, expected {}",
        expected.len()
    );
    Ok(())
}
