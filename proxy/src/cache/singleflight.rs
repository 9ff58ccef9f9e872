//! Concurrent requests for the same key share one computation, which runs in its own task so a
//! client that disconnects does not cancel it for the others.

use std::{collections::HashMap, future::Future, hash::Hash, sync::Arc, sync::Mutex};

use futures::{
    future::{BoxFuture, Shared},
    FutureExt,
};
use tracing::Instrument;

use super::CacheError;

pub type FlightResult<T> = Result<Arc<T>, Arc<CacheError>>;

type Flights<K, T> = Arc<Mutex<HashMap<K, Shared<BoxFuture<'static, FlightResult<T>>>>>>;

pub struct SingleFlight<K, T> {
    inflight: Flights<K, T>,
    /// Counts the callers that joined a run under way.
    joins: prometheus_client::metrics::counter::Counter,
}

impl<K: Eq + Hash + Clone + Send + 'static, T: Send + Sync + 'static> SingleFlight<K, T> {
    #[cfg(test)]
    pub fn new() -> Self {
        Self::counting_joins(Default::default())
    }

    /// Counts in `joins` every caller that shares a run another caller started.
    pub fn counting_joins(joins: prometheus_client::metrics::counter::Counter) -> Self {
        Self {
            inflight: Arc::new(Mutex::new(HashMap::new())),
            joins,
        }
    }

    /// Runs `work` unless a run for `key` is under way, in which case its result is shared.
    /// The run removes itself from the map when it ends, whether or not anyone still waits.
    #[cfg(test)]
    pub async fn run<F>(&self, key: K, work: F) -> FlightResult<T>
    where
        F: Future<Output = Result<T, CacheError>> + Send + 'static,
    {
        self.run_led(key, work).await.0
    }

    /// Runs `work` unless a run for `key` is under way, in which case its result is shared;
    /// and whether this caller started the run (`false`: it joined one). The run removes itself
    /// from the map when it ends, whether or not anyone still waits.
    pub async fn run_led<F>(&self, key: K, work: F) -> (FlightResult<T>, bool)
    where
        F: Future<Output = Result<T, CacheError>> + Send + 'static,
    {
        let (flight, led) = {
            let Ok(mut map) = self.inflight.lock() else {
                let poisoned = CacheError::Internal {
                    context: "single-flight lock poisoned".into(),
                    source: None,
                };
                return (Err(Arc::new(poisoned)), false);
            };
            match map.get(&key) {
                Some(flight) => {
                    self.joins.inc();
                    (flight.clone(), false)
                }
                None => {
                    let flight = self.start(key.clone(), work);
                    map.insert(key, flight.clone());
                    (flight, true)
                }
            }
        };
        (flight.await, led)
    }

    fn start<F>(&self, key: K, work: F) -> Shared<BoxFuture<'static, FlightResult<T>>>
    where
        F: Future<Output = Result<T, CacheError>> + Send + 'static,
    {
        let inflight = Arc::clone(&self.inflight);
        // Inserted under the map's lock, which the task needs to remove it: no early removal.
        // In the leader's span (a client's request, a prefetch tree): its trace shows the fetch.
        let run = async move {
            let result = work.await;
            if let Ok(mut map) = inflight.lock() {
                map.remove(&key);
            }
            result
        };
        let task = tokio::spawn(run.in_current_span());
        async move {
            match task.await {
                Ok(result) => result.map(Arc::new).map_err(Arc::new),
                Err(e) => Err(Arc::new(CacheError::Internal {
                    context: "the fetch task failed".into(),
                    source: Some(Box::new(e)),
                })),
            }
        }
        .boxed()
        .shared()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_run_and_later_callers_run_again() {
        let flights = Arc::new(SingleFlight::<u32, usize>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let call = |flights: Arc<SingleFlight<u32, usize>>, runs: Arc<AtomicUsize>| async move {
            flights
                .run(1, async move {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    Ok(runs.fetch_add(1, Ordering::SeqCst))
                })
                .await
        };
        let handles: Vec<_> = (0..16)
            .map(|_| tokio::spawn(call(Arc::clone(&flights), Arc::clone(&runs))))
            .collect();
        for h in handles {
            assert_eq!(*h.await.unwrap().unwrap(), 0);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(*call(flights, Arc::clone(&runs)).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_result_nobody_waited_for_is_not_served_later() {
        let flights = SingleFlight::<u32, usize>::new();
        let (release, gate) = tokio::sync::oneshot::channel::<()>();
        let abandoned = flights.run(1, async move {
            let _ = gate.await;
            Ok(1)
        });
        // The caller gives up before the run ends (a client that disconnected).
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), abandoned)
                .await
                .is_err()
        );
        release.send(()).unwrap();
        for _ in 0..100 {
            if flights.inflight.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(
            flights.inflight.lock().unwrap().is_empty(),
            "finished run left in the map"
        );
        assert_eq!(*flights.run(1, async { Ok(2) }).await.unwrap(), 2);
    }
}
