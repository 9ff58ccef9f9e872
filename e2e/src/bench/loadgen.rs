//! A raw keep-alive HTTP/1.1 GET client over tokio's `TcpStream`: bodies are
//! read into one reusable buffer per connection and discarded (or compared
//! with the expected bytes), so the client costs little more than the
//! `read` system calls. Used for NAR load and for N-clients-at-once bursts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read buffer per connection for load runs.
pub const LOAD_BUFFER: usize = 4 << 20;
/// Read buffer per client in bursts.
pub const BURST_BUFFER: usize = 1 << 20;
/// Longest time one GET may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// What to do with body bytes.
#[derive(Clone)]
pub enum Check {
    Discard,
    /// The body must equal these bytes.
    Equal(Arc<Vec<u8>>),
}

impl Check {
    fn feed(&self, offset: u64, chunk: &[u8]) -> Result<()> {
        if let Check::Equal(expected) = self {
            let (start, end) = (offset as usize, offset as usize + chunk.len());
            ensure!(
                end <= expected.len(),
                "body longer than the expected {} bytes",
                expected.len()
            );
            ensure!(
                chunk == &expected[start..end],
                "body differs from the file in {start}..{end}"
            );
        }
        Ok(())
    }
}

/// The end of one GET.
#[derive(Clone, Copy, Debug)]
pub struct Answer {
    pub status: u16,
    pub body_len: u64,
    /// When the first byte of the response arrived.
    pub first_byte: Instant,
    pub keep_alive: bool,
}

/// One connection and its read buffer.
pub struct Conn {
    stream: TcpStream,
    addr: SocketAddr,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr, buffer: usize) -> Result<Conn> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .with_context(|| format!("connect to {addr} timed out"))??;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            addr,
            buf: vec![0; buffer.max(64 * 1024)],
        })
    }

    /// GET `path`, bounded by [`REQUEST_TIMEOUT`].
    pub async fn get(&mut self, path: &str, check: &Check) -> Result<Answer> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.get_unbounded(path, check))
            .await
            .with_context(|| format!("GET {path} took more than {REQUEST_TIMEOUT:?}"))?
    }

    async fn get_unbounded(&mut self, path: &str, check: &Check) -> Result<Answer> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: nixcache-bench\r\n\r\n",
            self.addr
        );
        self.stream.write_all(request.as_bytes()).await?;
        let (mut filled, mut first_byte) = (0, None);
        let head_end = loop {
            let n = self.stream.read(&mut self.buf[filled..]).await?;
            ensure!(n > 0, "GET {path}: connection closed before the response headers");
            first_byte.get_or_insert_with(Instant::now);
            filled += n;
            if let Some(at) = self.buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            ensure!(filled < 64 * 1024, "GET {path}: response headers too long");
        };
        let head = parse_head(&self.buf[..head_end]).with_context(|| format!("GET {path}"))?;
        // An error body is not the expected one: read it, compare nothing.
        let check = if head.status == 200 {
            check
        } else {
            &Check::Discard
        };
        let early = (filled - head_end) as u64;
        ensure!(early <= head.length, "GET {path}: more bytes than Content-Length");
        check.feed(0, &self.buf[head_end..filled])?;
        let mut got = early;
        while got < head.length {
            let want = (head.length - got).min(self.buf.len() as u64) as usize;
            let n = self.stream.read(&mut self.buf[..want]).await?;
            ensure!(
                n > 0,
                "GET {path}: connection closed after {got} of {} bytes",
                head.length
            );
            check.feed(got, &self.buf[..n])?;
            got += n as u64;
        }
        if let Check::Equal(expected) = check {
            ensure!(
                got == expected.len() as u64,
                "GET {path}: {got} bytes, expected {}",
                expected.len()
            );
        }
        Ok(Answer {
            status: head.status,
            body_len: got,
            first_byte: first_byte.unwrap_or_else(Instant::now),
            keep_alive: head.keep_alive,
        })
    }
}

struct Head {
    status: u16,
    length: u64,
    keep_alive: bool,
}

fn parse_head(head: &[u8]) -> Result<Head> {
    let text = std::str::from_utf8(head).context("response headers are not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    let Some(status) = status else {
        bail!("bad status line {status_line:?}");
    };
    let (mut length, mut keep_alive) = (None, true);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().ok(),
            "connection" => keep_alive = !value.eq_ignore_ascii_case("close"),
            "transfer-encoding" if !value.eq_ignore_ascii_case("identity") => {
                bail!("Transfer-Encoding {value} is not supported by the bench client")
            }
            _ => {}
        }
    }
    let length = length.with_context(|| format!("no Content-Length in {text:?}"))?;
    Ok(Head {
        status,
        length,
        keep_alive,
    })
}

/// What a load run moved.
#[derive(Clone, Debug, Default)]
pub struct Load {
    pub bytes: u64,
    pub requests: u64,
    pub elapsed_s: f64,
    /// Time to last byte of each request.
    pub ttlb_ms: Vec<f64>,
}

/// `conns` connections GET `path` back to back for `duration` (a request in
/// flight at the end is finished and counted); every answer must be 200 with
/// `length` bytes.
pub async fn load(
    addr: SocketAddr,
    path: &str,
    length: u64,
    conns: usize,
    duration: Duration,
) -> Result<Load> {
    let mut ready = Vec::new();
    for _ in 0..conns {
        ready.push(Conn::connect(addr, LOAD_BUFFER).await?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = ready
        .into_iter()
        .map(|conn| tokio::spawn(load_one(conn, path.to_string(), length, deadline)))
        .collect();
    let mut total = Load::default();
    for task in tasks {
        let one = task.await??;
        total.bytes += one.bytes;
        total.requests += one.requests;
        total.ttlb_ms.extend(one.ttlb_ms);
    }
    total.elapsed_s = start.elapsed().as_secs_f64();
    Ok(total)
}

async fn load_one(mut conn: Conn, path: String, length: u64, deadline: Instant) -> Result<Load> {
    let mut done = Load::default();
    while Instant::now() < deadline {
        let t0 = Instant::now();
        let answer = conn.get(&path, &Check::Discard).await?;
        ensure!(answer.status == 200, "GET {path}: status {}", answer.status);
        ensure!(
            answer.body_len == length,
            "GET {path}: {} bytes, expected {length}",
            answer.body_len
        );
        done.bytes += answer.body_len;
        done.requests += 1;
        done.ttlb_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        if !answer.keep_alive {
            conn = Conn::connect(conn.addr, LOAD_BUFFER).await?;
        }
    }
    Ok(done)
}

/// One client of a burst: seconds from the burst's start.
#[derive(Clone, Copy, Debug)]
pub struct Fetch {
    pub ttfb_s: f64,
    pub ttlb_s: f64,
}

/// `clients` new connections GET `path` at once, spread round-robin over
/// `addrs` (client i to `addrs[i % addrs.len()]`); each body must equal
/// `expected`.
pub async fn burst(
    addrs: &[SocketAddr],
    path: &str,
    clients: usize,
    expected: Arc<Vec<u8>>,
) -> Result<Vec<Fetch>> {
    ensure!(!addrs.is_empty(), "a burst needs an address");
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let addr = addrs[i % addrs.len()];
            let (path, check) = (path.to_string(), Check::Equal(expected.clone()));
            tokio::spawn(async move {
                let mut conn = Conn::connect(addr, BURST_BUFFER).await?;
                let answer = conn.get(&path, &check).await?;
                ensure!(answer.status == 200, "GET {path}: status {}", answer.status);
                Ok(Fetch {
                    ttfb_s: answer.first_byte.duration_since(start).as_secs_f64(),
                    ttlb_s: start.elapsed().as_secs_f64(),
                })
            })
        })
        .collect();
    let mut fetches = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let addr = addrs[i % addrs.len()];
        fetches.push(
            task.await?
                .with_context(|| format!("burst client {i} (of {addr})"))?,
        );
    }
    Ok(fetches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() -> Result<()> {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\n")?;
        assert_eq!((h.status, h.length, h.keep_alive), (200, 12, false));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        Ok(())
    }
}
