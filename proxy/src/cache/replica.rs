//! This process among the replicas that share one database and one storage: its identity, the
//! fetch leases it holds (renewed while the fetch runs), and the client that streams another
//! replica's fetch in progress from that replica's internal endpoint.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::TryStreamExt;
use nixcache_protocol::{NarFile, SigningKey};
use reqwest::{header, StatusCode};
use sha2::{Digest, Sha256};

use crate::{
    db::{DbError, Lease, LeaseClaim, LeaseKey, MetadataStore},
    lease::{hold_lease, HeldLease},
    storage::{ByteRange, ByteStream},
};

/// Route prefix of the internal endpoint: `/_nixcache/fills/<file>` streams a fill in progress.
pub const FILLS_ROUTE: &str = "/_nixcache/fills";

#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    /// Unique per process: a restarted replica never mistakes an old lease for its own.
    pub id: String,
    /// Base URL other replicas use to reach this one, e.g. `http://10.1.2.3:8501`.
    pub address: String,
    /// How long a lease lasts without renewal: the wait before a dead holder's fetch is retaken.
    pub lease_ttl: Duration,
    /// Longest pause tolerated in a peer's stream (the peer may itself wait on its upstream).
    pub peer_read_timeout: Duration,
    /// What replicas show each other on the internal endpoint.
    pub peer_token: PeerToken,
}

/// The credential of the internal endpoint: derived from the signing key, which every replica of
/// one cache shares, so there is nothing more to configure and no client can guess it.
#[derive(Clone)]
pub struct PeerToken {
    /// The `Authorization` header value replicas send.
    header: Arc<str>,
    /// Its SHA-256, what a request's header is compared with.
    digest: [u8; 32],
}

impl std::fmt::Debug for PeerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerToken(***)")
    }
}

impl PeerToken {
    pub fn from_key(key: &SigningKey) -> Self {
        let secret = key.derive_secret("internal endpoint token v1");
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let header = format!("Bearer {hex}");
        Self {
            digest: Sha256::digest(header.as_bytes()).into(),
            header: header.into(),
        }
    }

    /// The `Authorization` header value (a secret: never logged).
    pub fn header_value(&self) -> &str {
        &self.header
    }

    /// Whether an `Authorization` header value is this token. Digests are compared, so the time
    /// taken says nothing about how much of a guess was right.
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        authorization.is_some_and(|given| <[u8; 32]>::from(Sha256::digest(given.as_bytes())) == self.digest)
    }
}

impl ReplicaOptions {
    /// `<hostname>-<8 random hex digits>`.
    pub fn new_id() -> String {
        let host = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "nixcache".into());
        let mut random = [0u8; 4];
        let _ = getrandom::getrandom(&mut random);
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        format!("{host}-{suffix}")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer answered `401`: it does not take our token. Waiting cannot help, unlike with
    /// an unreachable peer.
    #[error(
        "replica {holder} at {address} refused our token (401): its signing key differs from \
         ours, or it runs a version whose internal-endpoint token differs"
    )]
    Refused { holder: String, address: String },
    #[error("replica {holder} at {address}: {reason}")]
    Failed {
        holder: String,
        address: String,
        reason: String,
    },
}

pub struct Replica {
    pub options: ReplicaOptions,
    client: reqwest::Client,
    /// Whether a peer's refusal was logged as a warning already (once per process is enough to
    /// point at the setting; later ones are logged at debug level).
    refusal_warned: AtomicBool,
}

impl Replica {
    pub fn new(options: ReplicaOptions) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .read_timeout(options.peer_read_timeout)
            .no_proxy()
            .build()?;
        Ok(Self {
            options,
            client,
            refusal_warned: AtomicBool::new(false),
        })
    }

    /// Logs that a peer refused our token and this replica fetches from the upstream instead:
    /// a warning the first time, then at debug level.
    pub fn log_refusal(&self, nar: &impl std::fmt::Display, err: &PeerError) {
        if !self.refusal_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(%nar, error = %err,
                "another replica refused this one's internal-endpoint token: the replicas' signing keys \
                 differ (--secret-key-file), or they run versions that derive the token differently; \
                 fetching from the upstream instead of waiting (warned once)");
        } else {
            tracing::debug!(%nar, error = %err, "another replica refused our token; fetching from the upstream");
        }
    }

    /// Longest wait for another replica's fetch before this one fetches as well: long enough for
    /// a dead holder's lease to expire and be taken over.
    pub fn wait_limit(&self) -> Duration {
        self.options.lease_ttl * 2 + Duration::from_secs(5)
    }

    /// Claims `key` for this replica's fill or lookup. Callers poll this while another holds
    /// the lease, so a lease seen live and another's is reported after a read only.
    pub async fn claim(&self, db: &dyn MetadataStore, key: &LeaseKey) -> Result<LeaseClaim, DbError> {
        db.claim_lease_if_free(
            key,
            &self.options.id,
            &self.options.address,
            self.options.lease_ttl,
        )
        .await
    }

    /// This replica's name in leases taken for `work` other than its fills (`gc`, `scrub`,
    /// `upload`). A claim by the same holder succeeds again, so each kind of work needs its own
    /// name for the lease to exclude this replica's own fills too.
    pub fn holder_for(&self, work: &str) -> String {
        format!("{}/{work}", self.options.id)
    }

    /// Claims a lease for work others cannot stream from (an upload storing a NAR): without an
    /// address, so fills wait for it to go. Held by [`Self::holder_for`]`("upload")`. Polled
    /// like [`Self::claim`]: a lease another holds is only read.
    pub async fn claim_unstreamable(
        &self,
        db: &dyn MetadataStore,
        key: &LeaseKey,
    ) -> Result<LeaseClaim, DbError> {
        db.claim_lease_if_free(key, &self.holder_for("upload"), "", self.options.lease_ttl)
            .await
    }

    /// Keeps a lease claimed by [`Self::claim_unstreamable`] alive until released or dropped.
    pub fn hold_unstreamable(&self, db: Arc<dyn MetadataStore>, key: LeaseKey) -> HeldLease {
        hold_lease(db, key, self.holder_for("upload"), self.options.lease_ttl)
    }

    /// Keeps a lease this replica acquired alive until it is released or dropped.
    pub fn hold(&self, db: Arc<dyn MetadataStore>, key: LeaseKey) -> HeldLease {
        hold_lease(db, key, self.options.id.clone(), self.options.lease_ttl)
    }

    /// The size of the file `holder` is fetching; `None` when it has no such fetch (any more).
    pub async fn peer_size(&self, lease: &Lease, file: &NarFile) -> Result<Option<u64>, PeerError> {
        let response = self.request(lease, file, None, true).await?;
        Ok(response.and_then(|r| r.content_length()))
    }

    /// Streams `range` of the file `holder` is fetching; `None` when it has no such fetch.
    pub async fn peer_get(
        &self,
        lease: &Lease,
        file: &NarFile,
        range: ByteRange,
    ) -> Result<Option<ByteStream>, PeerError> {
        let Some(response) = self.request(lease, file, Some(range), false).await? else {
            return Ok(None);
        };
        let body = response.bytes_stream().map_err(std::io::Error::other);
        Ok(Some(Box::pin(body)))
    }

    async fn request(
        &self,
        lease: &Lease,
        file: &NarFile,
        range: Option<ByteRange>,
        head: bool,
    ) -> Result<Option<reqwest::Response>, PeerError> {
        let fail = |reason: String| PeerError::Failed {
            holder: lease.holder.clone(),
            address: lease.address.clone(),
            reason,
        };
        // Leases of work other than fills (GC, scrub, uploads) have none: a URL without a
        // host would be relative, and fail obscurely.
        if lease.address.is_empty() {
            return Err(fail("holds the lease without an address to stream from".into()));
        }
        let url = format!(
            "{}{FILLS_ROUTE}/{}",
            lease.address.trim_end_matches('/'),
            file.file_name()
        );
        let mut request = if head {
            self.client.head(&url)
        } else {
            self.client.get(&url)
        };
        request = request.header(header::AUTHORIZATION, self.options.peer_token.header_value());
        if let Some(r) = range {
            request = request.header(header::RANGE, format!("bytes={}-{}", r.start, r.end));
        }
        let response = request.send().await.map_err(|e| fail(e.to_string()))?;
        // A range must come back as a range: other bytes would be spliced into a response.
        match (response.status(), range.is_some()) {
            (StatusCode::NOT_FOUND, _) => Ok(None),
            (StatusCode::PARTIAL_CONTENT, true) | (StatusCode::OK, false) => Ok(Some(response)),
            (StatusCode::UNAUTHORIZED, _) => Err(PeerError::Refused {
                holder: lease.holder.clone(),
                address: lease.address.clone(),
            }),
            (other, _) => Err(fail(format!("answered HTTP {other}"))),
        }
    }
}
