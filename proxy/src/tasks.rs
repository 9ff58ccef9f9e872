//! The work a serving process does besides answering requests, each task owned: background
//! loops ([`Background`]: access-time flushes, size metrics, upstream priorities, the scrub,
//! scheduled GC) run until shutdown tells them to stop, and shutdown waits for them to end.
//! (Work a request starts, a fill, is tracked by the cache; helper tasks of one request, such as
//! a lease's renewer, belong to a handle that aborts them when dropped.)

use std::{future::Future, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Loops that run for as long as the process serves, and one-off writes nobody waits for
/// (a lease release). Clones share the tasks.
#[derive(Clone, Debug, Default)]
pub struct Background {
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// What a background task is told of shutdown. A loop stops at its pauses only, so the work
/// between them (a database write of access times) is never cut in the middle.
#[derive(Clone, Debug)]
pub struct Stopping(CancellationToken);

impl Stopping {
    /// Done when the process is stopping: for work that is safe to cut anywhere (as a crash
    /// would), raced against it.
    pub async fn stopped(&self) {
        self.0.cancelled().await
    }

    /// Waits `pause`; `false` when the process is stopping (at once, whatever is left of it).
    pub async fn pause(&self, pause: Duration) -> bool {
        tokio::select! {
            () = self.0.cancelled() => false,
            () = tokio::time::sleep(pause) => true,
        }
    }
}

impl Background {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs the task `work` makes; shutdown waits for it (see [`Stopping`]).
    pub fn spawn<F, Fut>(&self, name: &'static str, work: F)
    where
        F: FnOnce(Stopping) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let task = work(Stopping(self.stop.clone()));
        self.tasks.spawn(async move {
            task.await;
            tracing::debug!(task = name, "background task ended");
        });
    }

    /// Tells every task the process is stopping and waits until each has ended.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
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
        background.spawn("forever", |stop| async move {
            let _guard = guard;
            while stop.pause(Duration::from_secs(3600)).await {}
        });
        background.spawn("short", |_| async {});
        tokio::time::timeout(Duration::from_secs(5), background.shutdown())
            .await
            .expect("shutdown waits only for the tasks to notice");
        assert!(
            dropped.load(Ordering::SeqCst),
            "the loop was dropped by the time shutdown returned"
        );
    }
}
