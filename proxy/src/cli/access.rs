//! `serve`'s access flags: who may read, who may write, what writes are on, and where the
//! metrics are.

use std::{net::SocketAddr, path::PathBuf};

use clap::Args;

use crate::units::parse_size;

/// Who may do what. Writes from Nix clients (`nix copy --to http://…`): off unless enabled, and
/// then only with a credential from --upload-credentials-file. Reads: open to all, unless
/// --read-credentials-file makes the cache private.
#[derive(Debug, Clone, Args)]
pub struct AccessArgs {
    /// Accept `PUT /<hash>.narinfo` and `PUT /nar/<file>` (needs --upload-credentials-file).
    #[arg(long, env = "NIXCACHE_ALLOW_PUT")]
    pub allow_put: bool,

    /// Accept `DELETE /<hash>.narinfo` and `DELETE /nar/<file>` (needs --upload-credentials-file).
    #[arg(long, env = "NIXCACHE_ALLOW_DELETE")]
    pub allow_delete: bool,

    /// Accept `POST /_nixcache/warm` (fetch whole closures into the cache, as `nixcache warm`
    /// does) and `GET /_nixcache/warm` (the running or last one's state); needs
    /// --upload-credentials-file.
    #[arg(long, env = "NIXCACHE_ALLOW_WARM")]
    pub allow_warm: bool,

    /// Accept `POST`/`DELETE /_nixcache/pins/<hash>` (pin a path, `?closure` with everything it
    /// references, or unpin it) and `GET /_nixcache/pins`; needs --upload-credentials-file.
    #[arg(long, env = "NIXCACHE_ALLOW_PINS")]
    pub allow_pins: bool,

    /// Who may write: htpasswd lines `USER:$2y$…` (bcrypt, `htpasswd -nB USER`) for HTTP Basic,
    /// and/or lines holding only a token, accepted as a Bearer token or as any user's password.
    #[arg(long, env = "NIXCACHE_UPLOAD_CREDENTIALS_FILE")]
    pub upload_credentials_file: Option<PathBuf>,

    /// Make the cache private: every request but /healthz, /readyz and /metrics needs a
    /// credential from this file (same format as --upload-credentials-file; clients send it from
    /// their netrc) or from the upload credentials file.
    #[arg(long, env = "NIXCACHE_READ_CREDENTIALS_FILE")]
    pub read_credentials_file: Option<PathBuf>,

    /// Serve /metrics on this address instead of --listen (e.g. a port only the scraper reaches):
    /// the main listener then answers 404 for it.
    #[arg(long, env = "NIXCACHE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Largest NAR file accepted by PUT (50G, 500M, bytes; units are powers of 1024).
    #[arg(long, env = "NIXCACHE_MAX_UPLOAD_SIZE", default_value = "64G", value_parser = parse_size)]
    pub max_upload_size: u64,
}
