//! Password checks (bcrypt) on a few threads of their own. However clients behave, at most that
//! many checks run at once: a client that hangs up cannot start another while its own still runs,
//! as it could when the bound was a permit dropped with the request. And they never take the
//! blocking pool's threads, which NAR reads and writes need.

use std::{
    panic::AssertUnwindSafe,
    sync::{
        mpsc::{self, Receiver, SyncSender, TrySendError},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::oneshot;

/// Why a check did not run: the threads are all busy, which is no answer about the credential.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HashersBusy {
    #[error("{0} password checks are waiting already")]
    QueueFull(usize),
    #[error("no password check thread was free within {0:?}")]
    TimedOut(Duration),
    #[error("the password check threads are gone")]
    Stopped,
}

/// A check and where its answer goes; generic behind the queue, so any answer type fits.
trait Task: Send {
    /// The caller is gone (timed out, or its request dropped).
    fn abandoned(&self) -> bool;
    /// Runs the check, counted in `running` until its answer is ready (before it is sent: a
    /// caller that has its answer sees the count without it).
    fn run(self: Box<Self>, running: &Gauge);
}

struct Check<T, F> {
    check: F,
    reply: oneshot::Sender<T>,
}

impl<T: Default + Send, F: FnOnce() -> T + Send> Task for Check<T, F> {
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn run(self: Box<Self>, running: &Gauge) {
        running.inc();
        // A panic in a check must not shrink the pool for good; it grants nothing.
        let answer = std::panic::catch_unwind(AssertUnwindSafe(self.check)).unwrap_or_default();
        running.dec();
        let _ = self.reply.send(answer);
    }
}

type Job = Box<dyn Task>;

/// The threads and the bounded queue in front of them. The threads end when this is dropped.
pub struct Hashers {
    jobs: SyncSender<Job>,
    queue: usize,
}

impl Hashers {
    /// `threads` threads, `queue` checks waiting at most; `running` counts the checks running.
    pub fn start(threads: usize, queue: usize, running: Gauge) -> std::io::Result<Self> {
        let (jobs, receiver) = mpsc::sync_channel(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads {
            let (receiver, running) = (Arc::clone(&receiver), running.clone());
            std::thread::Builder::new()
                .name(format!("bcrypt-{index}"))
                .spawn(move || work(&receiver, &running))?;
        }
        Ok(Self { jobs, queue })
    }

    /// Runs `check` on one of the threads; waits at most `wait` for it, queue included. A check
    /// whose caller is gone (timed out, or the request dropped) by its turn is skipped.
    pub async fn run<T: Default + Send + 'static>(
        &self,
        check: impl FnOnce() -> T + Send + 'static,
        wait: Duration,
    ) -> Result<T, HashersBusy> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(Check { check, reply });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(HashersBusy::QueueFull(self.queue)),
            Err(TrySendError::Disconnected(_)) => return Err(HashersBusy::Stopped),
        }
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(ok)) => Ok(ok),
            Ok(Err(_)) => Err(HashersBusy::Stopped),
            Err(_) => Err(HashersBusy::TimedOut(wait)),
        }
    }
}

fn work(jobs: &Mutex<Receiver<Job>>, running: &Gauge) {
    loop {
        // One thread waits in `recv`, the others for the lock: each job goes to one of them.
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else {
            return;
        };
        if job.abandoned() {
            continue;
        }
        job.run(running);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn bounded_queue_and_skipped_jobs() {
        let running = Gauge::default();
        let hashers = Hashers::start(1, 1, running.clone()).unwrap();
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Mutex::new(hold);
        let first = hashers.run(
            move || hold.lock().unwrap().recv().is_ok(),
            Duration::from_secs(10),
        );
        let mut first = Box::pin(first);
        // Started on the thread (the gauge says so) and blocked there.
        tokio::select! {
            _ = &mut first => panic!("finished early"),
            () = async { while running.get() != 1 { tokio::time::sleep(Duration::from_millis(5)).await } } => {}
        }
        // One may wait; the next is refused at once.
        let skipped = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let ran = Arc::clone(&skipped);
        let waiting = hashers.run(
            move || {
                ran.store(false, std::sync::atomic::Ordering::SeqCst);
                true
            },
            Duration::from_millis(50),
        );
        let mut waiting = Box::pin(waiting);
        assert!(futures::poll!(&mut waiting).is_pending());
        let refused = hashers.run(|| true, Duration::from_secs(10)).await;
        assert!(matches!(refused, Err(HashersBusy::QueueFull(1))), "{refused:?}");
        assert!(matches!(waiting.await, Err(HashersBusy::TimedOut(_))));
        release.send(()).unwrap();
        assert!(first.await.unwrap());
        // The thread takes the given-up job off the queue (and skips it) in its own time.
        let mut next = hashers.run(|| true, Duration::from_secs(10)).await;
        for _ in 0..500 {
            if !matches!(next, Err(HashersBusy::QueueFull(_))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            next = hashers.run(|| true, Duration::from_secs(10)).await;
        }
        assert!(next.unwrap());
        assert!(
            skipped.load(std::sync::atomic::Ordering::SeqCst),
            "a check whose caller gave up ran"
        );
        assert_eq!(running.get(), 0);
    }
}
