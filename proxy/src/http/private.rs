//! A private cache (`--read-credentials-file`): every request needs a read or upload credential
//! (what Nix sends from its `netrc-file`), checked before anything else is looked at. Open still:
//! what probes and scrapers ask for (`/healthz`, `/readyz`, `/metrics`), and the internal
//! endpoint, which checks a token of its own. That token (the replicas', derived from the signing
//! key) passes the gate too: an HTTP warm-up walks the closure through this process's own
//! listener with it.

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::Response,
};

use super::{
    auth::{Grant, Refusal},
    AppState,
};
use crate::cache::replica::FILLS_ROUTE;

/// Paths a private cache answers without a credential.
const OPEN: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

pub(super) async fn gate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(credentials) = &state.read_auth else {
        return next.run(request).await;
    };
    if is_open(request.uri().path()) {
        return next.run(request).await;
    }
    match credentials.require(request.headers(), Grant::Read).await {
        Ok(()) => {}
        // Looked at only when no client credential passed: a client's request hashes its
        // header once.
        Err(Refusal::Unauthorized) if is_replica(&state, &request) => {}
        Err(refusal) => return refusal.into_response(),
    }
    next.run(request).await
}

fn is_replica(state: &AppState, request: &Request) -> bool {
    let authorization = request.headers().get(header::AUTHORIZATION);
    state
        .cache
        .is_replica(authorization.and_then(|v| v.to_str().ok()))
}

fn is_open(path: &str) -> bool {
    OPEN.contains(&path)
        || path
            .strip_prefix(FILLS_ROUTE)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_probes_metrics_and_the_internal_endpoint_are_open() {
        for open in ["/healthz", "/readyz", "/metrics", "/_nixcache/fills/abc.nar.xz"] {
            assert!(is_open(open), "{open}");
        }
        let closed = [
            "/",
            "/nix-cache-info",
            "/pubkey",
            "/status",
            "/abc.narinfo",
            "/nar/abc.nar.xz",
            "/_nixcache/warm",
            "/_nixcache/pins",
            "/_nixcache/fillsx",
            "/metrics/",
            "/healthz/x",
            "/log/x.drv",
        ];
        for path in closed {
            assert!(!is_open(path), "{path}");
        }
    }
}
