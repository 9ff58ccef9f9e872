//! Who may write (`--upload-credentials-file`). Two kinds of lines, `#` starts a comment:
//! - `USER:$2y$…`: an htpasswd entry with a bcrypt hash (`htpasswd -nbB USER PASSWORD`), for HTTP
//!   Basic, which is what Nix sends from its `netrc-file`;
//! - a line with no `:`: a token, accepted as `Authorization: Bearer TOKEN` or as the password of
//!   any user name in Basic.
//!
//! bcrypt is slow on purpose (tens of ms), so a header that passed is remembered (by its SHA-256,
//! never in clear) for a few minutes, and checks run on threads of their own ([`Hashers`]).

use std::{path::Path, sync::Arc, time::Duration};

use axum::http::{header, HeaderMap};
use base64::Engine as _;
use nixcache_formats::credentials::{token_digest, CredentialsError, CredentialsFile};
use prometheus_client::metrics::gauge::Gauge;

use super::hashers::{Hashers, HashersBusy};

/// How long a verified `Authorization` header is accepted without checking it again.
const VERIFIED_TTL: Duration = Duration::from_secs(300);
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
    #[error("cannot read the upload credentials file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("upload credentials file {path} is not valid")]
    Invalid {
        path: String,
        #[source]
        error: CredentialsError,
    },
    #[error("cannot start the threads that check upload passwords")]
    Threads(#[source] std::io::Error),
}

/// The accepted credentials. `Debug` shows only how many there are.
pub struct UploadAuth {
    credentials: Arc<CredentialsFile>,
    verified: moka::sync::Cache<[u8; 32], ()>,
    hashers: Hashers,
}

impl std::fmt::Debug for UploadAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "UploadAuth({} users, {} tokens)",
            self.credentials.users.len(),
            self.credentials.tokens.len()
        )
    }
}

impl UploadAuth {
    /// Reads the file; `hashing` counts the bcrypt checks running.
    pub fn load(path: &Path, hashing: Gauge) -> Result<Self, CredentialsFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| CredentialsFileError::Read {
            path: shown.clone(),
            error,
        })?;
        Self::parse(&text, &shown, hashing)
    }

    pub fn parse(text: &str, path: &str, hashing: Gauge) -> Result<Self, CredentialsFileError> {
        let credentials = CredentialsFile::parse(text).map_err(|error| CredentialsFileError::Invalid {
            path: path.into(),
            error,
        })?;
        let hashers =
            Hashers::start(BCRYPT_AT_ONCE, BCRYPT_QUEUE, hashing).map_err(CredentialsFileError::Threads)?;
        Ok(Self {
            credentials: Arc::new(credentials),
            verified: moka::sync::Cache::builder()
                .max_capacity(1024)
                .time_to_live(VERIFIED_TTL)
                .build(),
            hashers,
        })
    }

    /// Whether the request's `Authorization` header holds an accepted credential; `Err` when
    /// the password check threads are too busy to tell within [`BCRYPT_WAIT`].
    pub async fn allows(&self, headers: &HeaderMap) -> Result<bool, HashersBusy> {
        let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return Ok(false);
        };
        let seen = token_digest(value);
        if self.verified.contains_key(&seen) {
            return Ok(true);
        }
        let is_basic = value
            .split_once(' ')
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"));
        // Only Basic needs bcrypt; a Bearer token is a digest comparison, done here.
        let ok = if is_basic {
            let (credentials, value) = (Arc::clone(&self.credentials), value.to_owned());
            self.hashers
                .run(move || check(&credentials, &value), BCRYPT_WAIT)
                .await?
        } else {
            check(&self.credentials, value)
        };
        if ok {
            self.verified.insert(seen, ());
        }
        Ok(ok)
    }

    #[cfg(test)]
    fn check_now(&self, authorization: &str) -> bool {
        check(&self.credentials, authorization)
    }
}

/// Whether a request's `Authorization` header holds one of the file's credentials.
fn check(file: &CredentialsFile, authorization: &str) -> bool {
    let (scheme, rest) = authorization.split_once(' ').unwrap_or((authorization, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        return is_token(file, rest.trim());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest.trim()) else {
        return false;
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return false;
    };
    let Some((user, password)) = decoded.split_once(':') else {
        return false;
    };
    match file.users.get(user) {
        Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
        None => {
            // As slow as a known user's check, so the time does not tell which names exist.
            if let Some(any) = file.users.values().next() {
                let _ = bcrypt::verify(password, any);
            }
            is_token(file, password)
        }
    }
}

fn is_token(file: &CredentialsFile, token: &str) -> bool {
    // Comparing digests: how long it takes says nothing about the token.
    !token.is_empty() && file.tokens.contains(&token_digest(token))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        let raw = format!("{user}:{password}");
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }

    #[test]
    fn htpasswd_users_and_tokens() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = UploadAuth::parse(
            &format!("# uploaders\nci:{hash}\n\nsome-long-token-x\n"),
            "f",
            Gauge::default(),
        )
        .unwrap();
        assert!(UploadAuth::parse("ci\n", "f", Gauge::default())
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
            .unwrap_err()
            .contains("at least 16"));
        assert!(auth.check_now(&basic("ci", "s3cret")));
        assert!(!auth.check_now(&basic("ci", "wrong")));
        assert!(!auth.check_now(&basic("other", "s3cret")));
        assert!(auth.check_now("Bearer some-long-token-x"));
        assert!(auth.check_now(&basic("anyone", "some-long-token-x")));
        assert!(!auth.check_now("Bearer some-long-token-"));
        assert!(!auth.check_now("Bearer "));
        assert!(!auth.check_now("Digest whatever"));
        assert!(!auth.check_now("Basic !!!"));
        assert_eq!(format!("{auth:?}"), "UploadAuth(1 users, 1 tokens)");
    }

    #[test]
    fn plain_passwords_and_empty_files_are_refused() {
        let err = UploadAuth::parse("ci:plaintext\n", "creds", Gauge::default())
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
            .unwrap_err();
        assert!(err.contains("line 1") && err.contains("htpasswd -nbB"), "{err}");
        assert!(
            !err.contains("plaintext"),
            "the password must not be shown: {err}"
        );
        let err = UploadAuth::parse("# nothing\n", "creds", Gauge::default())
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
            .unwrap_err();
        assert!(err.contains("holds no credentials"), "{err}");
    }
}
