//! A NAR file being written to a temp file (by an upstream download, or by a copy of another
//! replica's download), shared by every client that wants it meanwhile. Clients follow the file
//! as it grows (late joiners start from what is already there); the verifier follows it too.
//! Until every hash matched, the last byte of each response is held back, so no client ever
//! gets a complete body of an object that failed verification. A NAR file is never empty, so a
//! size of 0 is never promised to a client.
//!
//! Clients (local requests, and other replicas copying it) stream it through `follow` and are
//! counted: when they all left, the fill is abandoned (see `abandoned`).
//!
//! A fill's progress changes only through its methods: `source_answered` (the size) and
//! `written` (the bytes) while it downloads, `downloaded` and `verified` (its phase), and `end`
//! (the one place it is committed or failed, and the one place the order of its last steps is
//! written).

use std::{
    collections::HashMap,
    fs::File,
    io,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

mod follow;

use super::CacheError;
use crate::{lease::HeldLease, storage::BlobKey};

/// How long a fill may have no client before it counts as abandoned: the first client attaches
/// a moment after the fill starts, and Nix retries a cut download within about a second.
const ABANDON_GRACE: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub enum Phase {
    Downloading,
    /// Every byte is in the temp file; verification is finishing.
    Downloaded,
    /// Every hash matched: the last bytes may go out while the file is being stored.
    Verified,
    /// Verified and stored.
    Committed,
    /// Why, as the first waiter would have been told (so a timeout stays a 504 for everyone).
    Failed(Arc<CacheError>),
}

#[derive(Clone, Debug)]
pub struct Progress {
    pub written: u64,
    /// The file's size, once known (narinfo FileSize or the upstream's Content-Length).
    pub size: Option<u64>,
    pub phase: Phase,
}

/// The client count of a fill cancelled for having none: no client may join it any more.
const CLOSED: usize = usize::MAX;

/// The fills in progress in this process, one per object.
#[derive(Clone)]
pub struct Fills {
    map: Arc<Mutex<HashMap<BlobKey, Arc<Fill>>>>,
    /// Fills registered (a metric).
    in_flight: Gauge,
    /// Bytes in the temp files of all fills (a metric).
    temp_bytes: Gauge,
}

impl Fills {
    pub fn new(in_flight: Gauge, temp_bytes: Gauge) -> Self {
        Self {
            map: Arc::default(),
            in_flight,
            temp_bytes,
        }
    }

    pub fn get(&self, key: &BlobKey) -> Option<Arc<Fill>> {
        self.lock().get(key).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Creates the fill's temp file at `tmp_path` and registers the fill under `key`. The size
    /// stays unknown until its source answered, so no client is promised a body before then.
    pub fn start(&self, key: BlobKey, tmp_path: PathBuf) -> io::Result<Arc<Fill>> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp_path)?;
        let (progress, _) = watch::channel(Progress {
            written: 0,
            size: None,
            phase: Phase::Downloading,
        });
        let fill = Arc::new(Fill {
            key: key.clone(),
            file: Arc::new(file),
            tmp_path,
            progress,
            clients: watch::channel(0).0,
            given_up: CancellationToken::new(),
            temp_bytes: self.temp_bytes.clone(),
        });
        self.lock().insert(key, Arc::clone(&fill));
        self.in_flight.inc();
        Ok(fill)
    }

    /// New requests no longer find `fill`; its temp file counts no more.
    fn forget(&self, fill: &Fill) {
        let removed = {
            let mut map = self.lock();
            // Only this fill: never one started for the same object since.
            let ours = map.get(&fill.key).is_some_and(|f| std::ptr::eq(&**f, fill));
            if ours {
                map.remove(&fill.key)
            } else {
                None
            }
        };
        if removed.is_some() {
            self.in_flight.dec();
            fill.temp_file_gone();
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<BlobKey, Arc<Fill>>> {
        self.map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub struct Fill {
    pub key: BlobKey,
    pub(super) file: Arc<File>,
    tmp_path: PathBuf,
    progress: watch::Sender<Progress>,
    /// Clients attached (see `attach`).
    clients: watch::Sender<usize>,
    /// Cancelled when its only client, a prefetch, gave it up (see `give_up_if_alone`).
    given_up: CancellationToken,
    /// Bytes in the temp files of all fills (a metric); this one's share is `written`.
    temp_bytes: Gauge,
}

impl Fill {
    /// Counts a client until the returned guard is dropped (it goes with the client's stream).
    /// `None` once the fill was cancelled for having none: the caller starts a new one.
    pub fn attach(self: &Arc<Self>) -> Option<Client> {
        let attached = self.clients.send_if_modified(|n| match *n {
            CLOSED => false,
            _ => {
                *n += 1;
                true
            }
        });
        attached.then(|| Client(Arc::clone(self)))
    }

    /// The source answered: from now on a body is promised to clients, of `size` bytes when
    /// the narinfo or the answer says.
    pub(super) fn source_answered(&self, size: Option<u64>) {
        self.progress.send_modify(|p| p.size = size);
    }

    /// Records that the temp file now holds `offset` bytes, and tells the clients.
    pub(super) fn written(&self, offset: u64) {
        let before = self.progress.borrow().written;
        self.temp_bytes.inc_by(offset as i64 - before as i64);
        self.progress.send_modify(|p| p.written = offset);
    }

    /// Where the temp file is (storage takes it from there).
    pub(super) fn tmp_path(&self) -> &std::path::Path {
        &self.tmp_path
    }

    /// Whether bytes are still to come (the fill is not yet complete, verified, or over).
    pub(super) fn downloading(&self) -> bool {
        matches!(self.progress.borrow().phase, Phase::Downloading)
    }

    /// How many bytes the temp file holds.
    pub(super) fn written_so_far(&self) -> u64 {
        self.progress.borrow().written
    }

    /// Every byte, `total` of them, is in the temp file (not yet synced); verification is finishing.
    pub(super) fn downloaded(&self, total: u64) {
        self.progress.send_modify(|p| {
            p.size = Some(total);
            p.phase = Phase::Downloaded;
        });
    }

    /// Every hash matched: clients may have their last bytes while the file is being stored.
    pub(super) fn verified(&self) {
        self.progress.send_modify(|p| p.phase = Phase::Verified);
    }

    /// What a verifier follows: the bytes written, and whether more are to come.
    pub(super) fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Ends the fill with `outcome` (`Ok`: the object is stored and recorded). The one place a
    /// fill is committed or failed, and the order of its last steps:
    /// 1. stored: `Committed`, so its clients get their last bytes at once;
    /// 2. the fetch `lease`, when held, is released before the fill is forgotten, so no other
    ///    request of this replica finds neither fill nor free lease and waits on itself;
    /// 3. the fill is forgotten: new requests find the stored object, or start a fill anew;
    /// 4. failed: `Failed` is told to the clients only now, so no request ever joins a fill that
    ///    already failed;
    /// 5. the temp file is removed (already gone when storage took it).
    pub(super) async fn end(&self, fills: &Fills, outcome: Result<(), CacheError>, lease: Option<HeldLease>) {
        if outcome.is_ok() {
            self.progress.send_modify(|p| p.phase = Phase::Committed);
        }
        if let Some(lease) = lease {
            lease.release().await;
        }
        fills.forget(self);
        if let Err(err) = outcome {
            self.progress
                .send_modify(|p| p.phase = Phase::Failed(Arc::new(err)));
        }
        if let Err(err) = tokio::fs::remove_file(&self.tmp_path).await {
            if err.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.tmp_path.display(), error = %err, "removing a fill's temp file failed");
            }
        }
    }

    /// The temp file is gone (stored, or removed): it counts no more.
    fn temp_file_gone(&self) {
        let written = self.progress.borrow().written;
        self.temp_bytes.dec_by(i64::try_from(written).unwrap_or(i64::MAX));
    }

    /// Resolves once every client has been gone for `ABANDON_GRACE` while more than
    /// `finish_below` bytes are left to download (or how many is unknown). A fill with less to go
    /// is finished for a client that comes back; it never resolves then.
    pub async fn abandoned(&self, finish_below: u64) {
        let mut clients = self.clients.subscribe();
        loop {
            // The sender lives in `self`: these never fail.
            let _ = clients.wait_for(|n| *n == 0).await;
            let back = tokio::time::timeout(ABANDON_GRACE, clients.wait_for(|n| *n > 0))
                .await
                .is_ok();
            if back {
                continue;
            }
            match self.left_to_download() {
                Some(left) if left <= finish_below => {
                    tracing::info!(nar = %self.key, left, "every client left; finishing the little left");
                    return std::future::pending().await;
                }
                left => {
                    // Closed in the same step as the last look at the count, so no client can
                    // join a fill that is being cancelled (and get a cut body).
                    let closed = self.clients.send_if_modified(|n| match *n {
                        0 => {
                            *n = CLOSED;
                            true
                        }
                        _ => false,
                    });
                    if closed {
                        tracing::info!(nar = %self.key, ?left, "every client left; cancelling the download");
                        return;
                    }
                }
            }
        }
    }

    /// Resolves when the fill is over: `true` when its object was stored.
    pub async fn ended(&self) -> bool {
        let mut progress = self.progress.subscribe();
        let over = progress
            .wait_for(|p| matches!(p.phase, Phase::Committed | Phase::Failed(_)))
            .await;
        over.is_ok_and(|p| matches!(p.phase, Phase::Committed))
    }

    /// Ends the download at once, without the grace an abandoned fill gets, when exactly `only`
    /// clients (the caller's) follow it: no other client may join it from now on. `false` when
    /// another client follows it or it is past downloading.
    pub fn give_up_if_alone(&self, only: usize) -> bool {
        if !self.downloading() {
            return false;
        }
        let closed = self.clients.send_if_modified(|n| match *n {
            n_now if n_now == only => {
                *n = CLOSED;
                true
            }
            _ => false,
        });
        if closed {
            self.given_up.cancel();
        }
        closed
    }

    /// Resolves once the fill was given up while still downloading (see `give_up_if_alone`).
    /// Looked at from the fill's own task, never once it is past that: a fill being verified or
    /// stored is never cut (it could leave an object without its record).
    pub async fn given_up(&self) {
        self.given_up.cancelled().await;
        if !self.downloading() {
            std::future::pending::<()>().await;
        }
    }

    /// Bytes still to come; `None` while the size is unknown.
    fn left_to_download(&self) -> Option<u64> {
        let p = self.progress.borrow();
        match p.phase {
            Phase::Downloading => p.size.map(|size| size.saturating_sub(p.written)),
            _ => Some(0),
        }
    }

    /// Waits until the size is known; fails if the download failed first. A size of 0 is never
    /// promised before verification: a NAR file is never empty, so such a fill fails.
    pub async fn size(&self) -> Result<u64, CacheError> {
        let mut rx = self.progress.subscribe();
        loop {
            let (size, phase) = {
                let p = rx.borrow_and_update();
                (p.size, p.phase.clone())
            };
            if let Phase::Failed(err) = phase {
                return Err(CacheError::Shared(err));
            }
            let verified = matches!(phase, Phase::Verified | Phase::Committed);
            if let Some(size) = size.filter(|size| *size > 0 || verified) {
                return Ok(size);
            }
            rx.changed()
                .await
                .map_err(|_| CacheError::FillFailed("download abandoned"))?;
        }
    }
}

/// A client of a fill, counted while this lives.
pub struct Client(Arc<Fill>);

impl Drop for Client {
    fn drop(&mut self) {
        self.0.clients.send_if_modified(|n| match *n {
            CLOSED | 0 => false,
            _ => {
                *n -= 1;
                true
            }
        });
    }
}
