//! Pins: store paths GC never evicts, whatever `--max-size` says. A pin holds its path, or with
//! `closure` everything the path references as well, as far as the cache holds narinfos for them
//! (a closure is read anew at every GC run, so paths cached after the pin are held too).
//!
//! Added and removed by `nixcache pin`, by `POST`/`DELETE /_nixcache/pins/<hash>`, and declared
//! by `serve --pin`/`--pin-closure` (a NixCache's `spec.pins`): declared pins are kept in line
//! with that list when a replica starts, and are not removed by hand.

mod closure;

use std::collections::{HashMap, HashSet};

use nixcache_protocol::{StorePath, StorePathHash};

pub use closure::{closure_of, Closure};

use crate::db::{DbError, MetadataStore, PinRecord, Timestamp};

/// Most pins a cache keeps: every GC run reads them all.
pub const MAX_PINS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("too many pins: a cache keeps at most {MAX_PINS}")]
    TooMany,
    #[error("{path} is pinned by serve --pin (a NixCache's spec.pins): change that list instead")]
    Declared { path: String },
    #[error("{0} is not pinned")]
    NotPinned(String),
}

/// A pin asked for: the path, and whether its closure is held too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinRequest {
    pub path: StorePath,
    pub closure: bool,
}

/// A pin made or found by [`add`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Added {
    pub pin: PinRecord,
    /// The path was pinned already (a path pin asked again as a closure pin becomes one; a
    /// closure pin stays one).
    pub existed: bool,
}

/// Pins `path`. A declared pin is left alone. The count is checked before the insert, so
/// concurrent adds may overshoot [`MAX_PINS`] by a few.
pub async fn add(db: &dyn MetadataStore, request: &PinRequest) -> Result<Added, PinError> {
    let existing = db.get_pin(request.path.hash()).await?;
    match &existing {
        Some(pin) if pin.declared => {
            return Err(PinError::Declared {
                path: pin.path.to_absolute(),
            })
        }
        Some(pin) if pin.closure || !request.closure => {
            return Ok(Added {
                pin: pin.clone(),
                existed: true,
            })
        }
        None if db.count_pins().await? >= MAX_PINS as u64 => return Err(PinError::TooMany),
        _ => {}
    }
    let pin = PinRecord {
        path: request.path.clone(),
        closure: request.closure,
        declared: false,
        created_at: existing.as_ref().map_or_else(Timestamp::now, |p| p.created_at),
    };
    db.put_pin(&pin).await?;
    Ok(Added {
        pin,
        existed: existing.is_some(),
    })
}

/// Removes the pin of `hash`; refuses a declared one.
pub async fn remove(db: &dyn MetadataStore, hash: &StorePathHash) -> Result<PinRecord, PinError> {
    let Some(pin) = db.get_pin(hash).await? else {
        return Err(PinError::NotPinned(hash.to_string()));
    };
    if pin.declared {
        return Err(PinError::Declared {
            path: pin.path.to_absolute(),
        });
    }
    // Gone meanwhile is as good as removed.
    db.delete_pin(hash).await?;
    Ok(pin)
}

/// What [`sync_declared`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Synced {
    pub added: usize,
    pub removed: usize,
}

/// Makes the declared pins exactly `declared`: adds or updates those missing or different (a pin
/// made by hand of a declared path becomes declared, and goes when it leaves the list), removes
/// declared ones no longer listed.
pub async fn sync_declared(db: &dyn MetadataStore, declared: &[PinRequest]) -> Result<Synced, PinError> {
    if declared.len() > MAX_PINS {
        return Err(PinError::TooMany);
    }
    let current: HashMap<StorePathHash, PinRecord> = db
        .pins()
        .await?
        .into_iter()
        .map(|p| (*p.path.hash(), p))
        .collect();
    let mut synced = Synced::default();
    let mut wanted = HashSet::new();
    for request in declared {
        wanted.insert(*request.path.hash());
        let same = current
            .get(request.path.hash())
            .is_some_and(|p| p.declared && p.closure == request.closure && p.path == request.path);
        if same {
            continue;
        }
        let pin = PinRecord {
            path: request.path.clone(),
            closure: request.closure,
            declared: true,
            created_at: Timestamp::now(),
        };
        db.put_pin(&pin).await?;
        synced.added += 1;
    }
    for (hash, pin) in &current {
        if pin.declared && !wanted.contains(hash) {
            db.delete_pin(hash).await?;
            synced.removed += 1;
        }
    }
    Ok(synced)
}

#[cfg(test)]
mod tests;
