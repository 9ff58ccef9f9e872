//! `POST /_nixcache/pins/<hash>[?closure]` (pin a path; its narinfo is looked up as a client's
//! is), `DELETE /_nixcache/pins/<hash>` and `GET /_nixcache/pins` (JSON). Off unless
//! `--allow-pins`; then each takes an upload credential. The hash is checked before anything
//! else is read.

use axum::{
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use nixcache_protocol::StorePathHash;
use serde::Serialize;

use super::{status::json, write, ApiError, AppState};
use crate::{
    db::PinRecord,
    pins::{self, PinError, PinRequest},
};

/// Route of the list; a pin is `PINS_ROUTE/<hash>`.
pub const PINS_ROUTE: &str = "/_nixcache/pins";

/// A pin as the API shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PinView {
    store_path: String,
    closure: bool,
    declared: bool,
    /// Unix seconds.
    created_at: i64,
}

impl From<&PinRecord> for PinView {
    fn from(pin: &PinRecord) -> Self {
        Self {
            store_path: pin.path.to_absolute(),
            closure: pin.closure,
            declared: pin.declared,
            created_at: pin.created_at.unix_secs(),
        }
    }
}

pub async fn add_pin(
    State(state): State<AppState>,
    Path(hash): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Err(response) = admit(&state, &headers).await {
        return Ok(response);
    }
    let hash = parse_hash(&hash)?;
    let closure = closure_query(query.as_deref()).map_err(ApiError::BadRequest)?;
    let path = state.cache.store_path_of(&hash).await?;
    let added = pins::add(state.cache.metadata(), &PinRequest { path, closure }).await?;
    let pin = &added.pin;
    tracing::info!(path = %pin.path, closure = pin.closure, existed = added.existed, "pinned");
    let status = if added.existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json(status, &PinView::from(pin)))
}

pub async fn remove_pin(
    State(state): State<AppState>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Err(response) = admit(&state, &headers).await {
        return Ok(response);
    }
    let hash = parse_hash(&hash)?;
    let pin = pins::remove(state.cache.metadata(), &hash).await?;
    tracing::info!(path = %pin.path, "unpinned");
    Ok(json(StatusCode::OK, &PinView::from(&pin)))
}

pub async fn list_pins(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Err(response) = admit(&state, &headers).await {
        return Ok(response);
    }
    let all = state.cache.metadata().pins().await.map_err(PinError::from)?;
    let views: Vec<PinView> = all.iter().map(PinView::from).collect();
    Ok(json(StatusCode::OK, &views))
}

/// 404 while pins over HTTP are off (the resource does not exist), else the credential check.
async fn admit(state: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let off = "not found: pins over HTTP are off (--allow-pins)";
    write::admit_switched(state, state.writes.pins, off, headers).await
}

fn parse_hash(hash: &str) -> Result<StorePathHash, ApiError> {
    StorePathHash::parse(hash).map_err(|_| {
        ApiError::BadRequest(format!(
            "invalid store path hash {:.40}: expected the 32 characters of /nix/store/<hash>-<name>",
            hash
        ))
    })
}

/// `?closure` (or `=true`/`=1`/`=false`/`=0`); anything else is refused.
fn closure_query(query: Option<&str>) -> Result<bool, String> {
    let mut closure = false;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        closure = match (&*key, &*value) {
            ("closure", "" | "true" | "1") => true,
            ("closure", "false" | "0") => false,
            _ => {
                return Err(format!(
                    "unknown query {key:.40}={value:.40}: only closure is known"
                ))
            }
        };
    }
    Ok(closure)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_closure_is_a_known_query() {
        assert_eq!(closure_query(None), Ok(false));
        assert_eq!(closure_query(Some("closure")), Ok(true));
        assert_eq!(closure_query(Some("closure=0")), Ok(false));
        assert!(closure_query(Some("closures")).is_err());
    }

    #[test]
    fn hashes_are_checked() {
        assert!(parse_hash("7h7qgvs4kgzsn8a6rb274saxyqh4jxlz").is_ok());
        for bad in [
            "",
            "short",
            "7h7qgvs4kgzsn8a6rb274saxyqh4jxlz-hello",
            "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
        ] {
            assert!(parse_hash(bad).is_err(), "{bad}");
        }
    }
}
