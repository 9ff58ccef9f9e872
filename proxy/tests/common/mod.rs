//! Shared fixtures for the proxy's black-box tests: a fake upstream cache, test data, the proxy
//! served on a real socket, and small HTTP helpers.
#![allow(dead_code)]

pub mod data;
pub mod logs;
pub mod one_nar;
pub mod proxy;
pub mod s3;
pub mod upstream;
pub mod writable;

use std::{future::Future, time::Duration};

use bytes::Bytes;
use nixcache_protocol::{NarInfo, SigningKey};
use reqwest::{header::HeaderMap, StatusCode};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

#[allow(unused_imports)]
pub use data::{random_bytes, sample_nar, Entry};
#[allow(unused_imports)]
pub use logs::Logs;
#[allow(unused_imports)]
pub use one_nar::OneNar;
pub use proxy::Proxy;
#[allow(unused_imports)]
pub use upstream::{Fault, Mode, Upstream};

/// Serves `app` on `listener` until the returned sender is dropped or fires.
pub fn serve_in_background(
    listener: tokio::net::TcpListener,
    app: axum::Router,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    (tx, task)
}

/// Upper bound for any single wait in these tests.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The upstream signing key most tests trust.
pub fn upstream_key() -> SigningKey {
    SigningKey::generate("test-upstream-1").unwrap()
}

/// A plain HTTP client: no system proxy, bounded.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(TIMEOUT)
        .build()
        .unwrap()
}

/// A response read completely.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    pub fn narinfo(&self) -> NarInfo {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text());
        NarInfo::parse(self.text()).unwrap()
    }
}

/// Sends `request` and reads the whole body; panics if the body cannot be read.
pub async fn send(request: reqwest::RequestBuilder) -> Got {
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let body = response.bytes().await.unwrap();
    Got {
        status,
        headers,
        body,
    }
}

pub async fn get(client: &reqwest::Client, url: &str) -> Got {
    send(client.get(url)).await
}

/// Polls `condition` every 10 ms until it holds; false if `limit` passes first.
pub async fn wait_until<F, Fut>(limit: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A response to a hand-written HTTP/1.1 request.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

/// Sends `METHOD path` verbatim (no client-side normalisation of `..` or `%2e`) and reads to EOF.
pub async fn raw_request(addr: std::net::SocketAddr, method: &str, path: &str) -> RawResponse {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(TIMEOUT, exchange).await.unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of headers");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("no status");
    RawResponse {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

/// Reads the rest of a response body chunk by chunk onto `body` (each chunk within [`TIMEOUT`]).
pub async fn read_rest(mut response: reqwest::Response, mut body: Vec<u8>) -> Vec<u8> {
    while let Some(chunk) = tokio::time::timeout(TIMEOUT, response.chunk())
        .await
        .unwrap()
        .unwrap()
    {
        body.extend_from_slice(&chunk);
    }
    body
}
