//! Who may write (`--upload-credentials-file`). Two kinds of lines, `#` starts a comment:
//! - `USER:$2y$…`: an htpasswd entry with a bcrypt hash (`htpasswd -nbB USER PASSWORD`), for HTTP
//!   Basic, which is what Nix sends from its `netrc-file`;
//! - a line with no `:`: a token, accepted as `Authorization: Bearer TOKEN` or as the password of
//!   any user name in Basic.
//!
//! bcrypt is slow on purpose (tens of ms), so a header that passed is remembered (by its SHA-256,
//! never in clear) for a few minutes.

use std::{collections::HashMap, path::Path, time::Duration};

use axum::http::{header, HeaderMap};
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// How long a verified `Authorization` header is accepted without checking it again.
const VERIFIED_TTL: Duration = Duration::from_secs(300);
/// bcrypt checks at once: wrong passwords cannot take more of the CPU than this.
const BCRYPT_AT_ONCE: usize = 2;
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
}

/// The accepted credentials. `Debug` shows only how many there are.
pub struct UploadAuth {
    users: HashMap<String, String>,
    /// SHA-256 of each token.
    tokens: Vec<[u8; 32]>,
    verified: moka::sync::Cache<[u8; 32], ()>,
    bcrypt_slots: tokio::sync::Semaphore,
}

impl std::fmt::Debug for UploadAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "UploadAuth({} users, {} tokens)",
            self.users.len(),
            self.tokens.len()
        )
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl UploadAuth {
    pub fn load(path: &Path) -> Result<Self, CredentialsFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| CredentialsFileError::Read {
            path: shown.clone(),
            error,
        })?;
        Self::parse(&text, &shown)
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, CredentialsFileError> {
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
        Ok(Self {
            users,
            tokens,
            verified: moka::sync::Cache::builder()
                .max_capacity(1024)
                .time_to_live(VERIFIED_TTL)
                .build(),
            bcrypt_slots: tokio::sync::Semaphore::new(BCRYPT_AT_ONCE),
        })
    }

    /// Whether the request's `Authorization` header holds an accepted credential. bcrypt runs
    /// on the blocking pool.
    pub async fn allows(self: &std::sync::Arc<Self>, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let seen = sha256(value.as_bytes());
        if self.verified.contains_key(&seen) {
            return true;
        }
        let Ok(_slot) = self.bcrypt_slots.acquire().await else {
            return false;
        };
        let (this, value) = (std::sync::Arc::clone(self), value.to_owned());
        let ok = tokio::task::spawn_blocking(move || this.check(&value))
            .await
            .unwrap_or(false);
        if ok {
            self.verified.insert(seen, ());
        }
        ok
    }

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
        let auth = UploadAuth::parse(&format!("# uploaders\nci:{hash}\n\nsome-long-token-x\n"), "f").unwrap();
        assert!(UploadAuth::parse("ci\n", "f")
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
        let err = UploadAuth::parse("ci:plaintext\n", "creds")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1") && err.contains("htpasswd -nbB"), "{err}");
        assert!(
            !err.contains("plaintext"),
            "the password must not be shown: {err}"
        );
        let err = UploadAuth::parse("# nothing\n", "creds").unwrap_err().to_string();
        assert!(err.contains("holds no credentials"), "{err}");
    }
}
