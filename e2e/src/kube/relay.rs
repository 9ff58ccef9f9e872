//! [`TcpRelay`]: a loopback TCP forwarder that can be frozen, to partition one process from the
//! API server: while frozen, connections stay open but no byte moves in either direction, so a
//! request in flight hangs exactly as it does behind a dead network path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Forwards `127.0.0.1:<port>` to `target` until dropped.
pub struct TcpRelay {
    /// Where to connect instead of the target.
    pub addr: SocketAddr,
    frozen: Arc<watch::Sender<bool>>,
    stop: CancellationToken,
}

impl TcpRelay {
    /// Starts forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Result<TcpRelay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (frozen, _) = watch::channel(false);
        let frozen = Arc::new(frozen);
        let stop = CancellationToken::new();
        let (accept_frozen, accept_stop) = (frozen.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = accept_stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                let (frozen, stop) = (accept_frozen.subscribe(), accept_stop.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = pipe(client, server, frozen) => {}
                    }
                });
            }
        });
        Ok(TcpRelay { addr, frozen, stop })
    }

    /// From now on no byte moves (connections stay open).
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Bytes move again.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn pipe(client: TcpStream, server: TcpStream, frozen: watch::Receiver<bool>) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        () = copy(client_read, server_write, frozen.clone()) => {}
        () = copy(server_read, client_write, frozen) => {}
    }
}

async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Wait while frozen: the peer's bytes stay in the kernel buffers, unread.
        while *frozen.borrow() {
            if frozen.changed().await.is_err() {
                return;
            }
        }
        let n = match tokio::time::timeout(Duration::from_millis(200), from.read(&mut buf)).await {
            Err(_) => continue, // re-check the freeze now and then
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(n)) => n,
        };
        // Bytes read just before a freeze are held back until the thaw.
        while *frozen.borrow() {
            if frozen.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
