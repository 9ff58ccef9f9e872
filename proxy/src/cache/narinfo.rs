//! Narinfo requests: from memory, the database, or the upstreams (one lookup per path across
//! replicas, a lease), signed with this proxy's key and rendered with its NAR URL.

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use nixcache_protocol::{NarFile, NarInfo, StorePathHash};

use super::{hot::HotNarinfo, Cache, CacheError, CacheStatus, Interest, NARINFO_POLL};

/// Where a narinfo a client asked for came from, with its record when one was read.
pub(super) enum Looked {
    /// From memory.
    Hot(Arc<NarInfoRecord>),
    /// From the database.
    Stored(Arc<NarInfoRecord>),
    /// Looked up in the upstreams now (by this request, or a lookup it joined).
    Fetched(Arc<NarInfoRecord>),
}
use crate::{
    db::{LeaseClaim, LeaseKey, NarInfoRecord, ProxySignature},
    metrics::{LookupResult, ObjectKind},
    upstream::Lookup,
};

impl Cache {
    /// The narinfo as this proxy serves it (our NAR URL and our signature added), and whether it
    /// was stored (`Hit`) or looked up now (`Miss`). A client's `GET` (`Interest::Fetch`) may
    /// start prefetches (see `prefetch`); a `HEAD` never does.
    pub async fn narinfo(
        &self,
        hash: &StorePathHash,
        interest: Interest,
    ) -> Result<(Bytes, CacheStatus), CacheError> {
        let looked_up = self.narinfo_text(hash).await;
        let (text, found, looked) =
            self.record_lookup(ObjectKind::Narinfo, looked_up.map(|(t, f, l)| ((t, f, l), f)))?;
        self.access.narinfo(hash);
        if let Interest::Fetch { client } = interest {
            self.narinfo_fetched(client, hash, looked);
        }
        let status = match found {
            LookupResult::Hit => CacheStatus::Hit,
            _ => CacheStatus::Miss,
        };
        Ok((text, status))
    }

    /// The text, whether it was a hit or a miss, and where it came from.
    async fn narinfo_text(&self, hash: &StorePathHash) -> Result<(Bytes, LookupResult, Looked), CacheError> {
        if let Some(hot) = self.hot.narinfo(hash) {
            return Ok((hot.text, LookupResult::Hit, Looked::Hot(hot.record)));
        }
        if let Some(record) = self.db.get_narinfo(hash).await? {
            let record = Arc::new(record);
            let text = self.render(Arc::clone(&record));
            return Ok((text, LookupResult::Hit, Looked::Stored(record)));
        }
        if self.negative.contains(hash) {
            return Err(CacheError::NotFound);
        }
        let (record, _) = self.shared_narinfo_lookup(*hash).await?;
        Ok((
            self.render(Arc::clone(&record)),
            LookupResult::Miss,
            Looked::Fetched(record),
        ))
    }

    /// The one lookup of `hash` under way in this process (started now, or joined), and
    /// whether this call started it.
    pub(super) async fn shared_narinfo_lookup(
        &self,
        hash: StorePathHash,
    ) -> Result<(Arc<NarInfoRecord>, bool), CacheError> {
        let this = self.clone();
        let (record, led) = self
            .narinfo_flights
            .run_led(hash, async move { this.fetch_narinfo(hash).await })
            .await;
        Ok((record.map_err(CacheError::Shared)?, led))
    }

    /// Asks the upstreams, unless another replica is already asking: then waits (bounded) for
    /// its answer to appear in the database.
    async fn fetch_narinfo(&self, hash: StorePathHash) -> Result<NarInfoRecord, CacheError> {
        let lease_key = LeaseKey::narinfo(&hash);
        let deadline = Instant::now() + self.replica.wait_limit();
        loop {
            // A flight that finished just before this one started may have answered already.
            if let Some(record) = self.db.get_narinfo(&hash).await? {
                return Ok(record);
            }
            if self.negative.contains(&hash) {
                return Err(CacheError::NotFound);
            }
            if Instant::now() > deadline {
                return self.lookup_upstreams(hash).await;
            }
            // A read while another replica holds the lease, a write only when it is gone.
            if let LeaseClaim::Acquired = self.replica.claim(&*self.db, &lease_key).await? {
                let lease = self.replica.hold(Arc::clone(&self.db), lease_key);
                // The last holder records its answer before releasing: look again first.
                let result = match self.db.get_narinfo(&hash).await {
                    Ok(Some(record)) => Ok(record),
                    Ok(None) => self.lookup_upstreams(hash).await,
                    Err(err) => Err(err.into()),
                };
                // Released in the background: the answer is recorded already, and no client
                // waits for one more database write (or, with the database down, its timeout).
                self.background
                    .spawn("narinfo_lease_release", |_| lease.release());
                return result;
            }
            tokio::time::sleep(NARINFO_POLL).await;
        }
    }

    async fn lookup_upstreams(&self, hash: StorePathHash) -> Result<NarInfoRecord, CacheError> {
        match self.upstreams.lookup_narinfo(&hash).await {
            Lookup::Found(info) => {
                let info = *info;
                let nar_file = NarFile {
                    hash: info.file_hash.unwrap_or(info.nar_hash),
                    compression: info.compression.clone(),
                };
                // FileHash is not signed: a narinfo must not claim a stored file holding another NAR.
                if let Some(stored) = self.db.get_nar(&nar_file).await? {
                    if stored.nar_hash != info.nar_hash {
                        return Err(CacheError::unverified(format!(
                            "{} names {} as its file, which holds another NAR ({})",
                            info.store_path,
                            nar_file.file_name(),
                            stored.nar_hash
                        )));
                    }
                }
                let proxy_sig = Some(self.sign(&info));
                let record = NarInfoRecord {
                    info,
                    nar_file,
                    proxy_sig,
                };
                self.db.put_narinfo(&record).await?;
                Ok(record)
            }
            Lookup::NotFound => {
                self.negative.insert(hash);
                Err(CacheError::NotFound)
            }
            Lookup::Failed(e) => Err(CacheError::Upstream(e)),
        }
    }

    pub(super) fn sign(&self, info: &NarInfo) -> ProxySignature {
        ProxySignature {
            public_key: self.public_key.to_string(),
            sig: self.signer.sign(&info.fingerprint()),
        }
    }

    /// The narinfo as served (remembered in memory with `record`).
    pub(super) fn render(&self, record: Arc<NarInfoRecord>) -> Bytes {
        let mut info = record.info.clone();
        info.url = format!("nar/{}", record.nar_file.file_name());
        let sig = match &record.proxy_sig {
            Some(p) if *p.public_key == *self.public_key => p.sig.clone(),
            _ => {
                // Signed by an earlier key: sign now and remember it.
                let fresh = self.sign(&info);
                let (db, hash, stored) = (Arc::clone(&self.db), *info.store_path.hash(), fresh.clone());
                self.background.spawn("proxy_signature", move |_| async move {
                    let _ = db.set_proxy_signature(&hash, &stored).await;
                });
                fresh.sig
            }
        };
        info.sigs.retain(|s| s.key_name() != self.signer.name());
        info.sigs.push(sig);
        let text = Bytes::from(info.to_string());
        let hot = HotNarinfo {
            text: text.clone(),
            record,
        };
        self.hot.put_narinfo(*info.store_path.hash(), hot);
        text
    }

    /// A narinfo whose NAR failed verification is forgotten, so the next request asks the
    /// upstream again instead of pointing clients at a file that can never verify.
    pub(super) async fn forget_lying_narinfo(&self, record: &NarInfoRecord) {
        let hash = record.info.store_path.hash();
        self.hot.forget_narinfo(hash);
        if let Err(err) = self.db.delete_narinfo(hash).await {
            tracing::warn!(store_path = %record.info.store_path, error = %err, "could not forget a narinfo");
        }
    }
}
