//! Polling the API server until something holds, with the last observation in the error.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Calls `probe` every 250 ms until it returns `Ok(Some(value))`; after `timeout`, fails with
/// `what` and the last `Err` or "not yet". An `Err` from `probe` is retried (the API server may
/// answer 404 while a child is being created).
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "not yet".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("{what}: still not true after {timeout:?} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
