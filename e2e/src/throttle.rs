//! A TCP relay that makes a local server look distant: on each connection, every answer starts
//! `latency` after the request that asked for it and comes at most `rate` bytes a second. The
//! bench puts it in front of s3s-fs as a model of a real bucket, where one GET's stream has a
//! ceiling of its own (a model: it knows nothing of HTTP but who spoke last).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    task::JoinSet,
    time::Instant,
};

/// Bytes relayed per write: the granularity of the pacing.
const CHUNK: usize = 64 << 10;

/// A running relay; dropping it closes every connection.
pub struct Throttle {
    pub addr: SocketAddr,
    _tasks: JoinSet<()>,
}

/// The link a relay models.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    /// Bytes a second per connection, server to client.
    pub rate: u64,
    /// From a request's last byte to its answer's first.
    pub latency: Duration,
}

impl Throttle {
    /// Relays connections to `target` over `link`.
    pub async fn start(target: SocketAddr, link: Link) -> Result<Throttle> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("bind the relay")?;
        let addr = listener.local_addr()?;
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        relay(client, server, link).await;
                    }
                });
            }
        });
        Ok(Throttle { addr, _tasks: tasks })
    }
}

/// Both directions until either side closes.
async fn relay(client: TcpStream, server: TcpStream, link: Link) {
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (from_client, to_client) = client.into_split();
    let (from_server, to_server) = server.into_split();
    // When the client last sent something the server has not answered yet.
    let asked = Arc::new(Mutex::new(None::<Instant>));
    tokio::select! {
        () = requests(from_client, to_server, Arc::clone(&asked)) => {}
        () = answers(from_server, to_client, asked, link) => {}
    }
}

async fn requests(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, asked: Arc<Mutex<Option<Instant>>>) {
    let mut buf = vec![0; CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Noted before it goes on, so the answer can never come first.
        *asked.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn answers(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    asked: Arc<Mutex<Option<Instant>>>,
    link: Link,
) {
    let mut buf = vec![0; CHUNK];
    let (mut started, mut sent) = (Instant::now(), 0u64);
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // The first bytes of an answer: the latency, and a new pace.
        let request = asked.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(at) = request {
            tokio::time::sleep_until(at + link.latency).await;
            (started, sent) = (Instant::now(), 0);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        sent += n as u64;
        let due = Duration::from_secs_f64(sent as f64 / link.rate as f64);
        tokio::time::sleep_until(started + due).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_come_late_and_at_the_rate() -> Result<()> {
        let server = TcpListener::bind("127.0.0.1:0").await?;
        let target = server.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = server.accept().await {
                tokio::spawn(async move {
                    let mut ask = [0u8; 1];
                    while conn.read_exact(&mut ask).await.is_ok() {
                        let _ = conn.write_all(&vec![7u8; 1 << 20]).await;
                    }
                });
            }
        });
        let link = Link {
            rate: 4 << 20,
            latency: Duration::from_millis(100),
        };
        let relay = Throttle::start(target, link).await?;
        let mut conn = TcpStream::connect(relay.addr).await?;
        for _ in 0..2 {
            let started = Instant::now();
            conn.write_all(b"?").await?;
            let mut first = [0u8; 1];
            conn.read_exact(&mut first).await?;
            let first_byte = started.elapsed();
            let mut rest = vec![0u8; (1 << 20) - 1];
            conn.read_exact(&mut rest).await?;
            let took = started.elapsed();
            assert!(first_byte >= Duration::from_millis(100), "{first_byte:?}");
            // 1 MiB at 4 MiB/s: 250 ms after the latency.
            assert!(took >= Duration::from_millis(300), "{took:?}");
            assert!(took < Duration::from_secs(3), "{took:?}");
        }
        Ok(())
    }
}
