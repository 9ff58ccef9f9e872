//! The work a serving process does besides answering requests, each task owned: background
//! loops ([`Background`]: access-time flushes, size metrics, upstream priorities, the scrub,
//! scheduled GC) run until shutdown cancels them, and shutdown waits for them to end, so nothing
//! is left running when `serve` returns.

use std::future::Future;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Loops that run for as long as the process serves. Clones share the tasks.
#[derive(Clone, Debug, Default)]
pub struct Background {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Background {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `work` until it ends or [`Self::shutdown`]; it is dropped at its next `.await` then.
    pub fn spawn(&self, name: &'static str, work: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => tracing::debug!(task = name, "background task stopped"),
                () = work => tracing::debug!(task = name, "background task ended"),
            }
        });
    }

    /// Stops every task and waits until each has ended.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use std::{
        sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        },
        time::Duration,
    };

    use super::*;

    /// Set when dropped: the task's future was dropped, not leaked.
    struct Dropped(Arc<AtomicBool>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn shutdown_ends_the_loops_and_waits_for_them() {
        let background = Background::new();
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = Dropped(Arc::clone(&dropped));
        background.spawn("forever", async move {
            let _guard = guard;
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        });
        background.spawn("short", async {});
        tokio::time::timeout(Duration::from_secs(5), background.shutdown())
            .await
            .expect("shutdown waits only for the tasks to notice");
        assert!(
            dropped.load(Ordering::SeqCst),
            "the loop was dropped by the time shutdown returned"
        );
    }
}
