//! Admission of new fills: at most `max_fills` run at once, and the temp files of those running
//! take at most `max_bytes`, each counted at its largest (known before the fill starts, from the
//! narinfo). A fill that does not fit waits a few seconds in a short queue, then is refused with
//! `CacheError::Busy` (503 with Retry-After). Joining a fill already running needs no admission.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

use super::CacheError;
use crate::metrics::{FillLimit, Metrics};

/// How long a miss waits for room before it is refused.
const QUEUE_WAIT: Duration = Duration::from_secs(3);
/// What a refused client is told to wait before it asks again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// The limits, from the command line.
#[derive(Clone, Copy, Debug)]
pub struct FillLimits {
    pub max_fills: usize,
    /// Temp bytes of the fills in progress; `None`: no limit beyond `max_fills`.
    pub max_bytes: Option<u64>,
    /// A fill whose clients all left runs on only when at most this much is left to download.
    pub finish_abandoned_below: u64,
}

#[derive(Default)]
struct InFlight {
    fills: usize,
    bytes: u64,
    /// Requests waiting for room; at most `max_fills`, so the queue is short.
    waiting: usize,
}

pub struct Admission {
    limits: FillLimits,
    queue_wait: Duration,
    in_flight: Mutex<InFlight>,
    /// Woken whenever a fill ends.
    freed: Notify,
    /// Woken whenever a client has to wait for room: prefetches give theirs up.
    client_waiting: Notify,
    metrics: Arc<Metrics>,
}

/// A running fill's share of the limits, given back when dropped (when the fill task ends).
pub struct FillPermit {
    admission: Arc<Admission>,
    bytes: u64,
}

/// The limit a refused fill ran into, as the metric's label.
#[derive(Clone, Copy)]
enum Full {
    Fills,
    Bytes,
}

impl Admission {
    pub fn new(limits: FillLimits, metrics: Arc<Metrics>) -> Self {
        Self {
            limits,
            queue_wait: QUEUE_WAIT,
            in_flight: Mutex::default(),
            freed: Notify::new(),
            client_waiting: Notify::new(),
            metrics,
        }
    }

    pub fn limits(&self) -> &FillLimits {
        &self.limits
    }

    /// Room for a fill whose temp file takes at most `bytes`: at once, or after a short wait
    /// for a fill to end; else `CacheError::Busy`.
    pub async fn admit(self: &Arc<Self>, bytes: u64) -> Result<FillPermit, CacheError> {
        let full = match self.try_admit(bytes) {
            Ok(permit) => return Ok(permit),
            Err(full) => full,
        };
        let Some(_queued) = self.enqueue() else {
            return Err(self.refuse(full));
        };
        self.client_waiting.notify_waiters();
        let deadline = Instant::now() + self.queue_wait;
        loop {
            // Registered before looking, so a fill ending in between is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let full = match self.try_admit(bytes) {
                Ok(permit) => return Ok(permit),
                Err(full) => full,
            };
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(self.refuse(full));
            }
        }
    }

    fn try_admit(self: &Arc<Self>, bytes: u64) -> Result<FillPermit, Full> {
        let mut in_flight = self.lock();
        if in_flight.fills >= self.limits.max_fills {
            return Err(Full::Fills);
        }
        // One fill alone always fits, or a NAR larger than the limit could never be fetched.
        let over = |max| in_flight.fills > 0 && in_flight.bytes.saturating_add(bytes) > max;
        if self.limits.max_bytes.is_some_and(over) {
            return Err(Full::Bytes);
        }
        Ok(self.grant(&mut in_flight, bytes))
    }

    /// Room for a prefetch: only what clients leave spare, a quarter of the slots and of the
    /// temp bytes always kept for them, and none while a client waits. Never queued.
    pub fn try_admit_spare(self: &Arc<Self>, bytes: u64) -> Option<FillPermit> {
        let mut in_flight = self.lock();
        let max_fills = self.limits.max_fills;
        let spare_fills = max_fills - (max_fills / 4).max(1);
        let spare_bytes = |max: u64| in_flight.bytes.saturating_add(bytes) <= max - max / 4;
        let fits = in_flight.waiting == 0
            && in_flight.fills < spare_fills
            && self.limits.max_bytes.is_none_or(spare_bytes);
        fits.then(|| self.grant(&mut in_flight, bytes))
    }

    /// Resolves when a client has to wait for room (from when it is enabled or first polled).
    pub fn client_waits(&self) -> tokio::sync::futures::Notified<'_> {
        self.client_waiting.notified()
    }

    /// Whether a client waits for room now.
    pub fn clients_waiting(&self) -> bool {
        self.lock().waiting > 0
    }

    fn grant(self: &Arc<Self>, in_flight: &mut InFlight, bytes: u64) -> FillPermit {
        in_flight.fills += 1;
        in_flight.bytes += bytes;
        self.metrics.fill_reserved_bytes.set(clamp(in_flight.bytes));
        FillPermit {
            admission: Arc::clone(self),
            bytes,
        }
    }

    /// A place in the queue, or `None` when it is full.
    fn enqueue(self: &Arc<Self>) -> Option<Queued> {
        let mut in_flight = self.lock();
        if in_flight.waiting >= self.limits.max_fills {
            return None;
        }
        in_flight.waiting += 1;
        self.metrics.fills_waiting.inc();
        Some(Queued(Arc::clone(self)))
    }

    fn refuse(&self, full: Full) -> CacheError {
        let limit = match full {
            Full::Fills => FillLimit::Fills,
            Full::Bytes => FillLimit::Bytes,
        };
        self.metrics.fill_refused(limit);
        CacheError::Busy {
            retry_after: RETRY_AFTER,
        }
    }

    fn lock(&self) -> MutexGuard<'_, InFlight> {
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for FillPermit {
    fn drop(&mut self) {
        let admission = &self.admission;
        {
            let mut in_flight = admission.lock();
            in_flight.fills -= 1;
            in_flight.bytes -= self.bytes;
            admission.metrics.fill_reserved_bytes.set(clamp(in_flight.bytes));
        }
        admission.freed.notify_waiters();
    }
}

/// A request waiting for room; leaves the queue when dropped (admitted, refused or gone).
struct Queued(Arc<Admission>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
        self.0.metrics.fills_waiting.dec();
    }
}

fn clamp(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn admission(max_fills: usize, max_bytes: Option<u64>) -> Arc<Admission> {
        let limits = FillLimits {
            max_fills,
            max_bytes,
            finish_abandoned_below: 0,
        };
        let mut admission = Admission::new(limits, Arc::new(Metrics::new()));
        admission.queue_wait = Duration::from_millis(500);
        Arc::new(admission)
    }

    #[tokio::test]
    async fn a_fill_waits_for_a_slot_and_is_refused_when_none_frees() {
        let a = admission(1, None);
        let first = a.admit(10).await.unwrap();
        let waiting = tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.admit(10).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(first);
        waiting.await.unwrap().unwrap();
        let _held = a.admit(10).await.unwrap();
        let refused = a.admit(10).await;
        assert!(matches!(refused, Err(CacheError::Busy { .. })));
    }

    #[tokio::test]
    async fn temp_bytes_are_bounded_but_one_fill_always_fits() {
        let a = admission(10, Some(100));
        let big = a.admit(1000).await.unwrap();
        assert!(a.admit(1).await.is_err());
        drop(big);
        let _half = a.admit(60).await.unwrap();
        let _rest = a.admit(40).await.unwrap();
        assert!(a.admit(1).await.is_err());
    }

    #[tokio::test]
    async fn prefetches_get_only_spare_room_and_never_wait() {
        let a = admission(4, Some(400));
        let first = a.try_admit_spare(100).unwrap();
        let _second = a.try_admit_spare(100).unwrap();
        let _third = a.try_admit_spare(100).unwrap();
        // A quarter of the slots and of the bytes stay the clients'.
        assert!(a.try_admit_spare(1).is_none());
        drop(first);
        assert!(a.try_admit_spare(101).is_none());
        let _fits = a.try_admit_spare(100).unwrap();
        let _client = a.admit(1).await.unwrap();
    }

    #[tokio::test]
    async fn the_queue_is_short() {
        let a = admission(1, None);
        let _held = a.admit(1).await.unwrap();
        let queued = tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.admit(1).await.map(drop) }
        });
        tokio::task::yield_now().await;
        // One slot, one place in the queue: taken, so this one is refused without waiting.
        let started = Instant::now();
        assert!(a.admit(1).await.is_err());
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(queued.await.unwrap().is_err());
    }
}
