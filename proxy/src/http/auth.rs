//! Who may write (`--upload-credentials-file`). Two kinds of lines, `#` starts a comment:
//! - `USER:$2y$…`: an htpasswd entry with a bcrypt hash (`htpasswd -nbB USER PASSWORD`), for HTTP
//!   Basic, which is what Nix sends from its `netrc-file`;
//! - a line with no `:`: a token, accepted as `Authorization: Bearer TOKEN` or as the password of
//!   any user name in Basic.
//!
//! bcrypt is slow on purpose (tens of ms), so a header that passed is remembered (by its SHA-256,
//! never in clear) for a few minutes, and checks run on threads of their own ([`Hashers`]).

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use axum::http::{header, HeaderMap};
use base64::Engine as _;
use prometheus_client::metrics::gauge::Gauge;
use sha2::{Digest, Sha256};

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
/// Shortest token accepted in the file.
const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsFileError {
    #[error("cannot read the upload credentials file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error(
        "upload credentials file {path}, line {line}: the password of {user:?} is not a bcrypt hash \
         ($2a$/$2b$/$2y$); make entries with `htpasswd -nbB USER PASSWORD`"
    )]
    NotBcrypt { path: String, line: usize, user: String },
    #[error("upload credentials file {path} holds no credentials")]
    Empty { path: String },
    #[error(
        "upload credentials file {path}, line {line}: a token must be at least {MIN_TOKEN_LEN} \
         characters (a line without `:` is a token)"
    )]
    ShortToken { path: String, line: usize },
    #[error("cannot start the threads that check upload passwords")]
    Threads(#[source] std::io::Error),
}

/// The accepted credentials. `Debug` shows only how many there are.
pub struct UploadAuth {
    credentials: Arc<Credentials>,
    verified: moka::sync::Cache<[u8; 32], ()>,
    hashers: Hashers,
}

struct Credentials {
    users: HashMap<String, String>,
    /// SHA-256 of each token.
    tokens: Vec<[u8; 32]>,
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

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
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
        let (mut users, mut tokens) = (HashMap::new(), Vec::new());
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some((user, hash)) if hash.starts_with("$2") => {
                    users.insert(user.to_owned(), hash.to_owned());
                }
                Some((user, _)) => {
                    return Err(CredentialsFileError::NotBcrypt {
                        path: path.into(),
                        line: index + 1,
                        user: user.into(),
                    })
                }
                None if line.len() < MIN_TOKEN_LEN => {
                    return Err(CredentialsFileError::ShortToken {
                        path: path.into(),
                        line: index + 1,
                    })
                }
                None => tokens.push(sha256(line.as_bytes())),
            }
        }
        if users.is_empty() && tokens.is_empty() {
            return Err(CredentialsFileError::Empty { path: path.into() });
        }
        let hashers =
            Hashers::start(BCRYPT_AT_ONCE, BCRYPT_QUEUE, hashing).map_err(CredentialsFileError::Threads)?;
        Ok(Self {
            credentials: Arc::new(Credentials { users, tokens }),
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
        let seen = sha256(value.as_bytes());
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
                .run(move || credentials.check(&value), BCRYPT_WAIT)
                .await?
        } else {
            self.credentials.check(value)
        };
        if ok {
            self.verified.insert(seen, ());
        }
        Ok(ok)
    }

    #[cfg(test)]
    fn check(&self, authorization: &str) -> bool {
        self.credentials.check(authorization)
    }
}

impl Credentials {
    fn check(&self, authorization: &str) -> bool {
        let (scheme, rest) = authorization.split_once(' ').unwrap_or((authorization, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return self.is_token(rest.trim());
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
        match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                // As slow as a known user's check, so the time does not tell which names exist.
                if let Some(any) = self.users.values().next() {
                    let _ = bcrypt::verify(password, any);
                }
                self.is_token(password)
            }
        }
    }

    fn is_token(&self, token: &str) -> bool {
        // Comparing digests: how long it takes says nothing about the token.
        !token.is_empty() && self.tokens.contains(&sha256(token.as_bytes()))
    }
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
            .unwrap_err()
            .to_string()
            .contains("at least 16"));
        assert!(auth.check(&basic("ci", "s3cret")));
        assert!(!auth.check(&basic("ci", "wrong")));
        assert!(!auth.check(&basic("other", "s3cret")));
        assert!(auth.check("Bearer some-long-token-x"));
        assert!(auth.check(&basic("anyone", "some-long-token-x")));
        assert!(!auth.check("Bearer some-long-token-"));
        assert!(!auth.check("Bearer "));
        assert!(!auth.check("Digest whatever"));
        assert!(!auth.check("Basic !!!"));
        assert_eq!(format!("{auth:?}"), "UploadAuth(1 users, 1 tokens)");
    }

    #[test]
    fn plain_passwords_and_empty_files_are_refused() {
        let err = UploadAuth::parse("ci:plaintext\n", "creds", Gauge::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1") && err.contains("htpasswd -nbB"), "{err}");
        assert!(
            !err.contains("plaintext"),
            "the password must not be shown: {err}"
        );
        let err = UploadAuth::parse("# nothing\n", "creds", Gauge::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no credentials"), "{err}");
    }
}
