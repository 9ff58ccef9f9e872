//! The accept loop: HTTP/1 and HTTP/2 (hyper's `auto` connections, as `axum::serve` made them)
//! with the limits `axum::serve` lacks, so slow or idle clients cannot use up the proxy.
//!
//! - Timeouts, for connections without a request in flight only (see [`conn::Timeouts`]): a
//!   request's head must arrive within `--header-read-timeout`, counted from the connection's
//!   opening or from the first byte of a later request; a kept-alive connection may wait
//!   `--idle-timeout` for that first byte. A response in progress is never timed here, however
//!   slowly the client reads it.
//! - At most `--max-connections` regular connections. At the limit, a new connection makes room
//!   by closing the one that has waited longest without a request (idle, or still sending its
//!   head: nothing is lost but a reconnection, as when nginx reuses its idle keep-alive
//!   connections). When every one has a request in flight, [`PROBE_RESERVE`] connections more are
//!   taken that answer `/healthz` and `/readyz` and refuse the rest with `503` and `Retry-After`:
//!   a busy proxy must not fail its liveness probe, whose restart would only add to the load.
//!   Past that, connections wait in the kernel's backlog until a slot frees.
//! - On stop, the listener closes (new connections are refused), connections without a request
//!   in flight close at once, and the others after their response.

mod conn;

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    pin::{pin, Pin},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use axum::{body::Body, http::Request, response::Response, Router};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use self::conn::{Activity, Closed, InFlight, Timeouts, Tracked, Verdict, Watched};
use super::error;
use crate::{cli::ConnectionArgs, metrics::Metrics};

/// Connections taken past `--max-connections` when all have a request in flight; they answer
/// only the health endpoints, one request each.
pub const PROBE_RESERVE: usize = 16;
/// How long a new connection waits for the slot of the connection it asked to close.
/// How long a connection being closed may take to send what it has buffered.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
const EVICTION_WAIT: Duration = Duration::from_secs(1);
/// While every slot is taken: how often to look again for a connection that went idle.
const FULL_RETRY: Duration = Duration::from_millis(100);
/// After a failed accept (out of file descriptors, say), a pause instead of a busy loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(250);
/// At most one warning a minute that the connection limit is reached.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);

/// The connection limits of `nixcache serve` (see the module doc).
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    pub max_connections: usize,
    /// Zero: no limit.
    pub header_read_timeout: Duration,
    /// Zero: no limit.
    pub idle_timeout: Duration,
    /// Zero: no limit.
    pub send_timeout: Duration,
}

impl From<&ConnectionArgs> for ServerLimits {
    fn from(args: &ConnectionArgs) -> Self {
        Self {
            max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
            header_read_timeout: args.header_read_timeout,
            idle_timeout: args.idle_timeout,
            send_timeout: args.send_timeout,
        }
    }
}

impl ServerLimits {
    fn timeouts(&self) -> Timeouts {
        let limit = |d: Duration| (!d.is_zero()).then_some(d);
        Timeouts {
            header: limit(self.header_read_timeout),
            idle: limit(self.idle_timeout),
            send: limit(self.send_timeout),
        }
    }
}

/// Serves `router` on `listener` until `stop` resolves; then stops accepting and returns once
/// every connection has closed (dropping the future cuts them all).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()>,
) {
    let mut stop = pin!(stop);
    let stopping = CancellationToken::new();
    let slots = Slots::new(limits.max_connections.max(1));
    let timeouts = limits.timeouts();
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            Err(err) if is_connection_error(&err) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "cannot accept connections");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let slot = tokio::select! {
            slot = slots.admit(&metrics) => slot,
            () = &mut stop => break,
        };
        let connection = Connection {
            router: router.clone(),
            activity: slot.activity,
            probes_only: slot.probes_only,
            timeouts,
            stopping: stopping.clone(),
            metrics: Arc::clone(&metrics),
        };
        let permit = slot.permit;
        connections.spawn(async move {
            let _permit = permit;
            connection.serve(tcp).await;
        });
    }
    drop(listener);
    stopping.cancel();
    while connections.join_next().await.is_some() {}
}

/// A connection's right to be served, and how.
struct Slot {
    permit: Permits,
    activity: Arc<Activity>,
    probes_only: bool,
}

/// Held for the connection's life: frees its slot (and its entry in [`Slots::open`]).
struct Permits {
    _permit: OwnedSemaphorePermit,
    registered: Option<(u64, Arc<Slots>)>,
}

impl Drop for Permits {
    fn drop(&mut self) {
        if let Some((id, slots)) = self.registered.take() {
            slots.open_connections().remove(&id);
        }
    }
}

struct Slots {
    regular: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    /// The regular connections, to find one to close at the limit.
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

impl Slots {
    fn new(max_connections: usize) -> Arc<Self> {
        Arc::new(Self {
            regular: Arc::new(Semaphore::new(max_connections)),
            reserve: Arc::new(Semaphore::new(PROBE_RESERVE)),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        })
    }

    fn open_connections(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection, as the module doc says; waits while there is none.
    async fn admit(self: &Arc<Self>, metrics: &Metrics) -> Slot {
        loop {
            if let Ok(permit) = Arc::clone(&self.regular).try_acquire_owned() {
                return self.regular_slot(permit);
            }
            if self.evict_longest_waiting() {
                let freed = tokio::time::timeout(EVICTION_WAIT, Arc::clone(&self.regular).acquire_owned());
                if let Ok(Ok(permit)) = freed.await {
                    return self.regular_slot(permit);
                }
            }
            if let Ok(permit) = Arc::clone(&self.reserve).try_acquire_owned() {
                self.warn_full();
                metrics.connections_probes_only.inc();
                return Slot {
                    permit: Permits {
                        _permit: permit,
                        registered: None,
                    },
                    activity: Activity::new(),
                    probes_only: true,
                };
            }
            tokio::time::sleep(FULL_RETRY).await;
        }
    }

    fn regular_slot(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Slot {
        let activity = Activity::new();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open_connections().insert(id, Arc::clone(&activity));
        Slot {
            permit: Permits {
                _permit: permit,
                registered: Some((id, Arc::clone(self))),
            },
            activity,
            probes_only: false,
        }
    }

    /// Asks the connection that has waited longest without a request to close; false if every
    /// one has a request in flight.
    fn evict_longest_waiting(&self) -> bool {
        let open = self.open_connections();
        let victim = open
            .values()
            .filter_map(|activity| activity.waiting_since().map(|since| (since, activity)))
            .min_by_key(|(since, _)| *since);
        let Some((_, activity)) = victim else {
            return false;
        };
        activity.evict();
        true
    }

    fn warn_full(&self) {
        let mut last = self.last_warning.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_none_or(|at| now >= at + FULL_WARNING_EVERY) {
            *last = Some(now);
            tracing::warn!(
                "every connection (--max-connections) has a request in flight: new connections \
                 answer only /healthz and /readyz for now"
            );
        }
    }
}

/// One accepted connection and what it needs to be served.
struct Connection {
    router: Router,
    activity: Arc<Activity>,
    probes_only: bool,
    timeouts: Timeouts,
    stopping: CancellationToken,
    metrics: Arc<Metrics>,
}

impl Connection {
    /// Serves the connection until it ends, the client's way or by a limit (a watchdog that
    /// only acts while no request is in flight).
    async fn serve(self, tcp: TcpStream) {
        // Without TCP_NODELAY the tail of a response can wait ~40 ms for a delayed ACK (Nagle).
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        self.metrics.connections_open.inc();
        let tcp_peer = tcp.peer_addr().ok().map(|addr| addr.ip());
        let io = TokioIo::new(Watched::new(tcp, Arc::clone(&self.activity)));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // The watchdog times heads; hyper's own timer would also close idle keep-alive
        // connections at the header timeout.
        builder
            .http1()
            .header_read_timeout(None::<Duration>)
            .keep_alive(!self.probes_only);
        let (router, activity, probes_only) =
            (self.router.clone(), Arc::clone(&self.activity), self.probes_only);
        let peer = tcp_peer.map(super::ClientIp);
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            if let Some(peer) = peer {
                request.extensions_mut().insert(peer);
            }
            let in_flight = activity.request_started();
            answer(router.clone(), request, probes_only, in_flight)
        });
        let conn = pin!(builder.serve_connection(io, service));
        self.watch(conn, |conn| conn.graceful_shutdown()).await;
        self.metrics.connections_open.dec();
    }

    /// Drives `conn` to its end, or closes it (drops it) when it has waited too long without a
    /// request, or is asked for its slot, or the server stops while it has no request.
    async fn watch<C, E>(&self, mut conn: Pin<&mut C>, graceful: impl Fn(Pin<&mut C>))
    where
        C: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut stopping = false;
        loop {
            let deadline = match self.activity.verdict(&self.timeouts, Instant::now()) {
                Verdict::Close(reason) => {
                    tracing::debug!(reason = reason.as_str(), "closing a client connection");
                    self.metrics.connection_closed(reason);
                    // Nothing of a response is pending while headers are awaited, and a client
                    // that stopped reading gets no more: dropped at once. An idle or evicted
                    // connection may still hold the tail of its last response in hyper's
                    // buffers: closed gracefully, within a bound.
                    if reason != Closed::SendTimeout && self.activity.may_hold_a_response_tail() {
                        close_gently(conn, &graceful).await;
                    }
                    return;
                }
                _ if stopping && self.activity.is_idle() => {
                    // Graceful shutdown was asked already; the last response's tail goes out.
                    if self.activity.may_hold_a_response_tail() {
                        let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
                    }
                    return;
                }
                Verdict::WaitUntil(deadline) => Some(deadline),
                Verdict::Untimed => None,
            };
            let timer = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(err) = served {
                        tracing::debug!(error = %err, "client connection failed");
                    }
                    return;
                }
                () = timer => {}
                () = self.activity.changed() => {}
                () = self.stopping.cancelled(), if !stopping => {
                    stopping = true;
                    graceful(conn.as_mut());
                }
            }
        }
    }
}

/// Closes `conn` once what it has buffered is sent, waiting at most [`CLOSE_GRACE`].
async fn close_gently<C, E>(mut conn: Pin<&mut C>, graceful: &impl Fn(Pin<&mut C>))
where
    C: Future<Output = Result<(), E>>,
{
    graceful(conn.as_mut());
    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
}

/// The router's response, or on a probes-only connection `503` for anything but a probe; the
/// request stays in flight until the body is sent.
async fn answer(
    router: Router,
    request: Request<Incoming>,
    probes_only: bool,
    in_flight: InFlight,
) -> Result<Response<Tracked<Body>>, Infallible> {
    let response = if probes_only && !is_probe(request.uri().path()) {
        error::too_busy("too many connections: try again shortly", 1)
    } else {
        match router.oneshot(request.map(Body::new)).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    };
    Ok(response.map(|body| Tracked::new(body, in_flight)))
}

/// A failure of the one connection being accepted, not of the listener.
fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}
