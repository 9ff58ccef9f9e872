//! `GET http://<pod IP>:<port>/status` of one replica: plain HTTP/1.1 on hyper (already in the
//! operator's tree through kube), one connection per request, bounded in time and size.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::report::Report;
pub use crate::metrics::PollResult;

/// Longest answer read; a `/status` with a handful of upstreams is a few KiB.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Why a replica's status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The TCP connection failed.
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(#[source] hyper::Error),
    /// Answered with a status other than 200.
    #[error("answered HTTP {0}")]
    Status(u16),
    /// The body could not be read in full (or was longer than [`MAX_BODY_BYTES`]).
    #[error("cannot read the answer: {0}")]
    Body(String),
    /// The body is not a status.
    #[error("the answer is not a status: {0}")]
    Json(#[source] serde_json::Error),
}

impl PollError {
    /// The metric's label for this error.
    pub fn result(&self) -> PollResult {
        match self {
            Self::Timeout(_) => PollResult::Timeout,
            Self::Connect(_) | Self::Http(_) => PollResult::Unreachable,
            Self::Status(_) => PollResult::HttpError,
            Self::Body(_) | Self::Json(_) => PollResult::Invalid,
        }
    }
}

/// The status of the replica at `addr`, within `timeout` (connection, request and body).
pub async fn get_status(addr: SocketAddr, timeout: Duration) -> Result<Report, PollError> {
    tokio::time::timeout(timeout, exchange(addr))
        .await
        .unwrap_or(Err(PollError::Timeout(timeout)))
}

async fn exchange(addr: SocketAddr) -> Result<Report, PollError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(PollError::Connect)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(PollError::Http)?;
    let request = http::Request::get("/status")
        .header(http::header::HOST, addr.to_string())
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::CONNECTION, "close")
        .header(
            http::header::USER_AGENT,
            concat!("nixcache-operator/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| PollError::Body(e.to_string()))?;
    let answer = async move {
        let response = sender.send_request(request).await.map_err(PollError::Http)?;
        if response.status() != http::StatusCode::OK {
            return Err(PollError::Status(response.status().as_u16()));
        }
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| PollError::Body(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(PollError::Json)
    };
    // The connection is driven here rather than in a task of its own, so the timeout drops it
    // with the request. Once it ends (the server closed), the answer has what it will get.
    let drive = async move {
        let _ = connection.await;
        std::future::pending::<()>().await
    };
    tokio::select! {
        answer = answer => answer,
        // Never taken: `drive` does not complete.
        () = drive => Err(PollError::Body("the connection ended without an answer".into())),
    }
}
