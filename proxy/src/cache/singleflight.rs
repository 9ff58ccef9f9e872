//! Concurrent requests for the same key share one computation, which runs in its own task so a
//! client that disconnects does not cancel it for the others.

use std::{collections::HashMap, future::Future, hash::Hash, sync::Arc, sync::Mutex};

use futures::{
    future::{BoxFuture, Shared},
    FutureExt,
};

use super::CacheError;

pub type FlightResult<T> = Result<Arc<T>, Arc<CacheError>>;

pub struct SingleFlight<K, T> {
    inflight: Mutex<HashMap<K, Shared<BoxFuture<'static, FlightResult<T>>>>>,
}

impl<K: Eq + Hash + Clone, T: Send + Sync + 'static> SingleFlight<K, T> {
    pub fn new() -> Self {
        Self {
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `work` unless a run for `key` is under way, in which case its result is shared.
    pub async fn run<F>(&self, key: K, work: F) -> FlightResult<T>
    where
        F: Future<Output = Result<T, CacheError>> + Send + 'static,
    {
        let flight = {
            let Ok(mut map) = self.inflight.lock() else {
                return Err(Arc::new(CacheError::Internal(
                    "single-flight lock poisoned".into(),
                )));
            };
            map.entry(key.clone())
                .or_insert_with(|| {
                    let task = tokio::spawn(work);
                    async move {
                        match task.await {
                            Ok(result) => result.map(Arc::new).map_err(Arc::new),
                            Err(e) => Err(Arc::new(CacheError::Internal(format!("fetch task failed: {e}")))),
                        }
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        let result = flight.clone().await;
        if let Ok(mut map) = self.inflight.lock() {
            if map.get(&key).is_some_and(|f| f.ptr_eq(&flight)) {
                map.remove(&key);
            }
        }
        result
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
}
