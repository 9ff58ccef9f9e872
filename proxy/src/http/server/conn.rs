//! What one client connection is doing (a request in flight, or waiting for one and since when),
//! as its socket and its responses tell it, and what the watchdog in `super` makes of it.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::body::{Body, Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
    time::Instant,
};

/// How long a connection may wait without a request in flight (`None`: as long as it likes).
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// For a request's head: from the connection's opening, or from the first byte of a later
    /// request on a kept-alive connection.
    pub header: Option<Duration>,
    /// For the first byte of the next request on a kept-alive connection.
    pub idle: Option<Duration>,
    /// For the client to take more of a response once the socket refused bytes.
    pub send: Option<Duration>,
}

/// Why the proxy closed a connection: the `reason` label of `nixcache_http_connections_closed`.
pub use crate::metrics::ConnectionClosed as Closed;

/// What the watchdog should do now.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A request is in flight, or no timeout applies: wait for a change.
    Untimed,
    WaitUntil(Instant),
    Close(Closed),
}

struct State {
    in_flight: usize,
    /// Since when no request has been in flight: the accept, or the end of the last response.
    waiting_since: Instant,
    /// The first byte read since then: a request's head is arriving.
    head_started: Option<Instant>,
    /// A request was made here: the connection is kept alive, waiting for the next one.
    served_any: bool,
    /// Asked to close (for a new connection's slot) unless a request is in flight.
    evict: bool,
    /// Since when the socket takes no more bytes (the client does not read).
    blocked_since: Option<Instant>,
}

/// Shared by the socket wrapper, the service (requests and their bodies) and the watchdog.
pub struct Activity {
    state: Mutex<State>,
    changed: Notify,
    /// `state.blocked_since` is set: checked without the lock on every write.
    blocked: AtomicBool,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                in_flight: 0,
                waiting_since: Instant::now(),
                head_started: None,
                served_any: false,
                evict: false,
                blocked_since: None,
            }),
            changed: Notify::new(),
            blocked: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves at the next change the watchdog must look at (a lost wake-up is kept).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    fn on_read(&self) {
        let mut state = self.lock();
        if state.in_flight == 0 && state.head_started.is_none() {
            state.head_started = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// The socket refused bytes: the send timeout runs from the first refusal.
    fn write_blocked(&self) {
        if self.blocked.swap(true, Ordering::Relaxed) {
            return;
        }
        self.lock().blocked_since = Some(Instant::now());
        self.changed.notify_one();
    }

    /// The socket took bytes again.
    fn write_progressed(&self) {
        if self.blocked.swap(false, Ordering::Relaxed) {
            self.lock().blocked_since = None;
            self.changed.notify_one();
        }
    }

    /// A request's head was read; it is in flight until the returned guard (moved into the
    /// response body) is dropped.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        let mut state = self.lock();
        state.in_flight += 1;
        state.head_started = None;
        state.served_any = true;
        InFlight(Arc::clone(self))
    }

    fn request_ended(&self) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.waiting_since = Instant::now();
            state.head_started = None;
            drop(state);
            self.changed.notify_one();
        }
    }

    /// Served a response and no next request has begun: hyper may still be sending the tail of
    /// that response. (A connection in the middle of a head has nothing to send.)
    pub fn may_hold_a_response_tail(&self) -> bool {
        let state = self.lock();
        state.in_flight == 0 && state.served_any && state.head_started.is_none()
    }

    pub fn is_idle(&self) -> bool {
        self.lock().in_flight == 0
    }

    /// Since when it has waited for a request, unless one is in flight or it is already asked
    /// to close.
    pub fn waiting_since(&self) -> Option<Instant> {
        let state = self.lock();
        (state.in_flight == 0 && !state.evict).then_some(state.waiting_since)
    }

    /// Asks it to close unless a request is in flight by the time the watchdog looks.
    pub fn evict(&self) {
        self.lock().evict = true;
        self.changed.notify_one();
    }

    pub fn verdict(&self, timeouts: &Timeouts, now: Instant) -> Verdict {
        let state = self.lock();
        if state.in_flight > 0 {
            return match (state.blocked_since, timeouts.send) {
                (Some(at), Some(limit)) if now >= at + limit => Verdict::Close(Closed::SendTimeout),
                (Some(at), Some(limit)) => Verdict::WaitUntil(at + limit),
                _ => Verdict::Untimed,
            };
        }
        if state.evict {
            return Verdict::Close(Closed::Evicted);
        }
        let (since, limit, reason) = match state.head_started {
            Some(at) => (at, timeouts.header, Closed::HeaderTimeout),
            None if !state.served_any => (state.waiting_since, timeouts.header, Closed::HeaderTimeout),
            None => (state.waiting_since, timeouts.idle, Closed::IdleTimeout),
        };
        match limit {
            None => Verdict::Untimed,
            Some(limit) if now >= since + limit => Verdict::Close(reason),
            Some(limit) => Verdict::WaitUntil(since + limit),
        }
    }
}

/// A request in flight, from its head until its response body is sent or dropped.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// The client's socket, noting when bytes arrive.
pub struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<T> Watched<T> {
    fn note_write(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Pending => self.activity.write_blocked(),
            Poll::Ready(Ok(n)) if *n > 0 => self.activity.write_progressed(),
            Poll::Ready(_) => {}
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body that keeps its request in flight until it is sent or dropped: a download,
/// however slow, is never taken for an idle connection.
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header: Some(Duration::from_secs(10)),
        idle: Some(Duration::from_secs(60)),
        send: Some(Duration::from_secs(30)),
    };

    #[test]
    fn header_then_busy_then_idle_then_header() {
        let secs = Duration::from_secs;
        let opened = Instant::now();
        let activity = Activity::new();
        // Nothing sent yet: the header timeout runs from the accept.
        assert!(matches!(
            activity.verdict(&TIMEOUTS, Instant::now()),
            Verdict::WaitUntil(_)
        ));
        assert_eq!(
            activity.verdict(&TIMEOUTS, opened + secs(11)),
            Verdict::Close(Closed::HeaderTimeout)
        );
        let in_flight = activity.request_started();
        assert_eq!(activity.verdict(&TIMEOUTS, opened + secs(1000)), Verdict::Untimed);
        // A client that stops reading: the send timeout from the first refused write.
        activity.write_blocked();
        let blocked = Instant::now();
        assert!(matches!(
            activity.verdict(&TIMEOUTS, blocked),
            Verdict::WaitUntil(_)
        ));
        assert_eq!(
            activity.verdict(&TIMEOUTS, blocked + secs(31)),
            Verdict::Close(Closed::SendTimeout)
        );
        activity.write_progressed();
        assert_eq!(
            activity.verdict(&TIMEOUTS, blocked + secs(1000)),
            Verdict::Untimed
        );
        drop(in_flight);
        // Kept alive: the idle timeout runs from the end of the response.
        let ended = activity.waiting_since().unwrap();
        assert_eq!(
            activity.verdict(&TIMEOUTS, ended + secs(59)),
            Verdict::WaitUntil(ended + secs(60))
        );
        assert_eq!(
            activity.verdict(&TIMEOUTS, ended + secs(60)),
            Verdict::Close(Closed::IdleTimeout)
        );
        // A next request's first byte: the header timeout again, from that byte.
        activity.on_read();
        assert!(matches!(
            activity.verdict(&TIMEOUTS, ended + secs(5)),
            Verdict::WaitUntil(at) if at < ended + secs(11)
        ));
        assert_eq!(
            activity.verdict(&TIMEOUTS, ended + secs(30)),
            Verdict::Close(Closed::HeaderTimeout)
        );
        activity.evict();
        assert_eq!(
            activity.verdict(&TIMEOUTS, ended),
            Verdict::Close(Closed::Evicted)
        );
        assert_eq!(activity.waiting_since(), None, "asked once");
    }
}
