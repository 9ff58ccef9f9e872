//! Who may read (`--read-credentials-file`, a private cache) and who may write
//! (`--upload-credentials-file`). Both files hold two kinds of lines, `#` starts a comment:
//! - `USER:$2y$…`: an htpasswd entry with a bcrypt hash (`htpasswd -nbB USER PASSWORD`), for HTTP
//!   Basic, which is what Nix sends from its `netrc-file`;
//! - a line with no `:`: a token, accepted as `Authorization: Bearer TOKEN` or as the password of
//!   any user name in Basic.
//!
//! A write credential reads too: a builder that uploads (`nix copy --to`) also asks what the
//! cache has. bcrypt is slow on purpose (tens of ms), so a header that passed is remembered (by
//! its SHA-256, never in clear) with what it grants until unused for a few minutes, requests
//! with the same header share one check, and checks run on threads of their own ([`Hashers`]),
//! shared by both files: one bound on the CPU passwords take.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::Response,
};
use base64::Engine as _;
use futures::{
    future::{BoxFuture, Shared, WeakShared},
    FutureExt,
};
use nixcache_formats::credentials::{token_digest, CredentialsError, CredentialsFile};
use prometheus_client::metrics::gauge::Gauge;

use super::{
    error,
    hashers::{Hashers, HashersBusy},
};

/// How long a verified `Authorization` header is remembered after its last use: a client that
/// keeps asking is never checked again (the files are read once, at start).
const VERIFIED_IDLE: Duration = Duration::from_secs(300);
/// bcrypt checks at once (one thread each): wrong passwords cannot take more of the CPU.
pub const BCRYPT_AT_ONCE: usize = 2;
/// Checks that may wait for a thread; past that a request is refused at once (503).
const BCRYPT_QUEUE: usize = 16;
/// Longest a request waits for its check, queue included, before it is refused (503): a
/// legitimate client is told to retry, as for any overload, rather than that its password is
/// wrong; an attacker's flood waits in no unbounded queue.
const BCRYPT_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum CredentialsFileError {
    #[error("cannot read the {what} credentials file {path}: {error}")]
    Read {
        what: Grant,
        path: String,
        error: std::io::Error,
    },
    #[error("{what} credentials file {path} is not valid")]
    Invalid {
        what: Grant,
        path: String,
        #[source]
        error: CredentialsError,
    },
    #[error("cannot start the threads that check passwords")]
    Threads(#[source] std::io::Error),
}

/// What a credential allows; a write credential reads too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grant {
    Read,
    Write,
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Grant::Read => "read",
            Grant::Write => "upload",
        })
    }
}

/// A bcrypt check under way, shared by the requests that carry the same header (a client's
/// parallel first requests cost one check, not one each).
type Check = Shared<CheckFuture>;
type CheckFuture = BoxFuture<'static, Result<Option<Grant>, HashersBusy>>;

/// The two files' credentials. `Debug` shows only how many there are.
pub struct Credentials {
    files: Arc<Files>,
    verified: moka::sync::Cache<[u8; 32], Grant>,
    hashers: Arc<Hashers>,
    /// By header digest; weak, so a check every waiter gave up on is dropped, not kept.
    checks: Arc<Mutex<HashMap<[u8; 32], WeakShared<CheckFuture>>>>,
}

#[derive(Default)]
struct Files {
    read: Option<CredentialsFile>,
    write: Option<CredentialsFile>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |file: &Option<CredentialsFile>| file.as_ref().map(|f| (f.users.len(), f.tokens.len()));
        write!(
            f,
            "Credentials(read: {:?}, upload: {:?})",
            count(&self.files.read),
            count(&self.files.write)
        )
    }
}

/// Whether a `PUT`, `DELETE` or warm-up was let through.
#[derive(Clone, Copy, Debug)]
pub enum Refusal {
    /// Too many credentials being checked to tell in time (503).
    Busy,
    /// No credential, or a wrong one (401).
    Unauthorized,
    /// A read credential where a write one is needed (403).
    ReadOnly,
}

impl Refusal {
    pub fn into_response(self) -> Response {
        match self {
            Refusal::Busy => error::too_busy("too many credential checks at once: try again shortly", 1),
            Refusal::ReadOnly => error::plain(
                StatusCode::FORBIDDEN,
                "forbidden: this credential may read, not write (--upload-credentials-file)",
            ),
            Refusal::Unauthorized => {
                let mut response = error::plain(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized: a valid credential is required",
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"nixcache\", charset=\"UTF-8\""),
                );
                response
            }
        }
    }
}

impl Credentials {
    /// Reads the files given; `None` when neither is. `hashing` counts the bcrypt checks running.
    pub fn load(
        read: Option<&Path>,
        write: Option<&Path>,
        hashing: Gauge,
    ) -> Result<Option<Self>, CredentialsFileError> {
        let load = |path: Option<&Path>, what| {
            path.map(|path| {
                let shown = path.display().to_string();
                match std::fs::read_to_string(path) {
                    Ok(text) => parse_file(&text, &shown, what),
                    Err(error) => Err(CredentialsFileError::Read {
                        what,
                        path: shown,
                        error,
                    }),
                }
            })
            .transpose()
        };
        let files = Files {
            read: load(read, Grant::Read)?,
            write: load(write, Grant::Write)?,
        };
        if files.read.is_none() && files.write.is_none() {
            return Ok(None);
        }
        Self::new(files, hashing).map(Some)
    }

    fn new(files: Files, hashing: Gauge) -> Result<Self, CredentialsFileError> {
        let hashers =
            Hashers::start(BCRYPT_AT_ONCE, BCRYPT_QUEUE, hashing).map_err(CredentialsFileError::Threads)?;
        Ok(Self {
            files: Arc::new(files),
            verified: moka::sync::Cache::builder()
                .max_capacity(1024)
                .time_to_idle(VERIFIED_IDLE)
                .build(),
            hashers: Arc::new(hashers),
            checks: Arc::default(),
        })
    }

    /// Whether reads need a credential (a private cache).
    pub fn private(&self) -> bool {
        self.files.read.is_some()
    }

    /// Whether writes can be granted at all.
    pub fn writable(&self) -> bool {
        self.files.write.is_some()
    }

    /// Lets the request through when its `Authorization` header grants at least `need`.
    pub async fn require(&self, headers: &HeaderMap, need: Grant) -> Result<(), Refusal> {
        match self.grant(headers).await {
            Ok(Some(grant)) if grant >= need => Ok(()),
            Ok(Some(_)) => Err(Refusal::ReadOnly),
            Ok(None) => Err(Refusal::Unauthorized),
            Err(busy) => {
                tracing::debug!(error = %busy, "refused: credentials could not be checked in time");
                Err(Refusal::Busy)
            }
        }
    }

    /// What the request's `Authorization` header grants, if anything; `Err` when the password
    /// check threads are too busy to tell within [`BCRYPT_WAIT`].
    async fn grant(&self, headers: &HeaderMap) -> Result<Option<Grant>, HashersBusy> {
        let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return Ok(None);
        };
        let seen = token_digest(value);
        if let Some(grant) = self.verified.get(&seen) {
            return Ok(Some(grant));
        }
        let is_basic = value
            .split_once(' ')
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"));
        // Only Basic needs bcrypt; a Bearer token is a digest comparison, done here.
        let grant = if is_basic {
            self.basic_check(seen, value).await?
        } else {
            self.files.check(value)
        };
        if let Some(grant) = grant {
            self.verified.insert(seen, grant);
        }
        Ok(grant)
    }
}

impl Credentials {
    /// The bcrypt check of `value` (whose digest is `seen`): the one under way for the same
    /// header, else a new one.
    fn basic_check(&self, seen: [u8; 32], value: &str) -> Check {
        let mut checks = self.checks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(check) = checks.get(&seen).and_then(WeakShared::upgrade) {
            return check;
        }
        // Checks whose waiters all left never reach their own removal.
        checks.retain(|_, check| check.upgrade().is_some());
        let (files, hashers, all) = (
            Arc::clone(&self.files),
            Arc::clone(&self.hashers),
            Arc::clone(&self.checks),
        );
        let value = value.to_owned();
        let check = async move {
            let answer = hashers.run(move || files.check(&value), BCRYPT_WAIT).await;
            all.lock().unwrap_or_else(PoisonError::into_inner).remove(&seen);
            answer
        }
        .boxed()
        .shared();
        if let Some(weak) = check.downgrade() {
            checks.insert(seen, weak);
        }
        check
    }
}

fn parse_file(text: &str, path: &str, what: Grant) -> Result<CredentialsFile, CredentialsFileError> {
    CredentialsFile::parse(text).map_err(|error| CredentialsFileError::Invalid {
        what,
        path: path.into(),
        error,
    })
}

impl Files {
    /// What an `Authorization` header value grants: the write file is asked first.
    fn check(&self, authorization: &str) -> Option<Grant> {
        let (scheme, rest) = authorization.split_once(' ').unwrap_or((authorization, ""));
        let files = [(Grant::Write, &self.write), (Grant::Read, &self.read)];
        let files = files
            .iter()
            .filter_map(|(grant, file)| Some((*grant, file.as_ref()?)));
        if scheme.eq_ignore_ascii_case("bearer") {
            let token = rest.trim();
            return files
                .into_iter()
                .find(|(_, file)| is_token(file, token))
                .map(|(g, _)| g);
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let (user, password) = basic_pair(rest)?;
        // One bcrypt check per file that has users, against its own hash for the name (any of
        // its hashes when it has none): the time is the same for every name, known or not.
        for (grant, file) in files.clone() {
            // The costliest hash: a name no one has then takes as long as the slowest known one.
            let Some(any) = file.users.values().max_by_key(|hash| bcrypt_cost(hash)) else {
                continue;
            };
            let known = file.users.get(&user);
            let verified = bcrypt::verify(&password, known.unwrap_or(any)).unwrap_or(false);
            if known.is_some() && verified {
                return Some(grant);
            }
        }
        files
            .into_iter()
            .find(|(_, file)| is_token(file, &password))
            .map(|(g, _)| g)
    }
}

/// The cost of a bcrypt hash (`$2y$NN$…`), 0 when it does not say.
fn bcrypt_cost(hash: &str) -> u32 {
    hash.get(4..6).and_then(|cost| cost.parse().ok()).unwrap_or(0)
}

/// `user:password` of a Basic credential.
fn basic_pair(encoded: &str) -> Option<(String, String)> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn is_token(file: &CredentialsFile, token: &str) -> bool {
    // Comparing digests: how long it takes says nothing about the token.
    !token.is_empty() && file.tokens.contains(&token_digest(token))
}

#[cfg(test)]
mod tests;
