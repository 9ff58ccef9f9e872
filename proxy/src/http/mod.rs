//! The HTTP edge of the binary cache protocol: parse and validate, call the cache, respond.

mod auth;
mod caching;
mod encoding;
mod error;
pub mod forwarded;
mod hashers;
mod health;
mod info;
mod landing;
mod nar;
mod narinfo;
mod observe;
mod pins;
mod private;
pub mod server;
mod side;
mod status;
mod trace;
mod upload;
mod warm;
mod write;

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use axum::{
    http::{StatusCode, Uri},
    middleware,
    response::Response,
    routing::get,
    Router,
};

use crate::cache::{replica::FILLS_ROUTE, Cache};
pub use auth::{Credentials, CredentialsFileError, Grant, BCRYPT_AT_ONCE};
pub use encoding::Encoders;
pub use error::ApiError;
pub use pins::PINS_ROUTE;
pub use warm::WARM_ROUTE;

/// The address a request came from (its connection's peer, set by the server; or, from a
/// trusted proxy, the client it names: see `forwarded`): prefetching follows each client's walk
/// apart.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub std::net::IpAddr);

impl ClientIp {
    /// A `GET` fetches (for this client), a `HEAD` probes.
    fn interest(
        method: &axum::http::Method,
        client: Option<axum::Extension<ClientIp>>,
    ) -> crate::cache::Interest {
        match *method {
            axum::http::Method::HEAD => crate::cache::Interest::Probe,
            _ => crate::cache::Interest::Fetch {
                client: client.map(|c| c.0 .0),
            },
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub cache: Cache,
    /// The rendered /nix-cache-info body.
    pub cache_info: Arc<str>,
    pub writes: Writes,
    /// Set for a private cache (`--read-credentials-file`): reads need a credential too.
    pub read_auth: Option<Arc<Credentials>>,
    /// `/metrics` is served on a listener of its own (`--metrics-listen`), not on this one.
    pub metrics_elsewhere: bool,
    /// Set once shutdown began: /readyz answers 503 so no new clients are sent here.
    pub draining: Arc<AtomicBool>,
    /// `Content-Encoding` of what compresses well.
    pub encoders: Encoders,
    /// `--trusted-proxies`: whose `X-Forwarded-For` names the client (none: the peer is).
    pub trusted_proxies: Arc<forwarded::TrustedProxies>,
}

impl AppState {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Which write verbs are on, and who may use them.
#[derive(Clone, Debug, Default)]
pub struct Writes {
    pub put: bool,
    pub delete: bool,
    /// Required (checked at start) when a verb or warm-ups are on.
    pub auth: Option<Arc<Credentials>>,
    /// Largest NAR file a PUT may send.
    pub max_upload_size: u64,
    /// `POST /_nixcache/warm` (`--allow-warm`; needs `auth` too).
    pub warm: Option<crate::warm::jobs::WarmJobs>,
    /// `/_nixcache/pins` (`--allow-pins`; needs `auth` too).
    pub pins: bool,
}

/// The whole HTTP API; tests call this directly.
pub fn router(state: AppState) -> Router {
    let metrics = Arc::clone(state.cache.metrics());
    let trusted = Arc::clone(&state.trusted_proxies);
    let routes = Router::new()
        .route("/", get(landing::landing))
        .route("/nix-cache-info", get(info::cache_info))
        .route("/pubkey", get(info::pubkey))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(info::metrics))
        .route("/status", get(status::status))
        .route(
            "/nar/{file}",
            get(nar::get_nar).put(upload::put_nar).delete(upload::delete_nar),
        )
        .route(&format!("{FILLS_ROUTE}/{{file}}"), get(nar::get_fill))
        .route(warm::WARM_ROUTE, get(warm::warm_state).post(warm::start_warm))
        .route(pins::PINS_ROUTE, get(pins::list_pins))
        .route(
            &format!("{}/{{hash}}", pins::PINS_ROUTE),
            axum::routing::post(pins::add_pin).delete(pins::remove_pin),
        )
        .route("/log/{drv}", get(side::get_log).put(side::put_log))
        .route(
            "/realisations/{id}",
            get(trace::get_realisation).put(trace::put_realisation),
        )
        .route(
            "/build-trace-v2/{drv}/{output}",
            get(trace::get_v2).put(trace::put_v2),
        )
        .route(
            "/{file}",
            get(narinfo::get_narinfo)
                .put(upload::put_narinfo)
                .delete(upload::delete_narinfo),
        )
        .fallback(fallback);
    // Not even a pass-through layer on the hot paths unless it is asked for.
    let routes = match trusted.is_empty() {
        true => routes,
        false => routes.layer(middleware::from_fn_with_state(trusted, forwarded::resolve)),
    };
    routes
        .layer(middleware::from_fn_with_state(state.clone(), private::gate))
        .layer(encoding::layer())
        .layer(middleware::map_response_with_state(
            Arc::clone(&metrics),
            encoding::after_encoding,
        ))
        .layer(middleware::from_fn_with_state(metrics, observe::observe))
        .with_state(state)
}

/// What the `--metrics-listen` listener serves: `/metrics`, and 404 for the rest.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(info::metrics_listener))
        .fallback(|| async { error::plain(StatusCode::NOT_FOUND, "not found: only /metrics is served here") })
        .with_state(state)
}

/// Anything that looks like a cache object but did not match is malformed (400); the rest is 404.
async fn fallback(uri: Uri) -> Response {
    let path = uri.path();
    let lowered = path.to_ascii_lowercase();
    if path.starts_with("/nar/")
        || path.starts_with("/log/")
        || path.starts_with("/realisations/")
        || path.starts_with("/build-trace-v2/")
        || path.ends_with(".narinfo")
        || path.ends_with(".ls")
        || lowered.contains("..")
        || lowered.contains("%2f")
        || lowered.contains("%2e")
    {
        return error::plain(
            StatusCode::BAD_REQUEST,
            "invalid path: expected /<hash>.narinfo, /<hash>.ls, /log/<hash>-<name>.drv or /nar/<filehash>.nar[.xz|.zst|.bz2]",
        );
    }
    error::plain(StatusCode::NOT_FOUND, "not found")
}
