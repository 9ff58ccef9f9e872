//! The upload credentials file (`--upload-credentials-file`). Two kinds of lines, `#` starts a
//! comment:
//! - `USER:$2y$…`: an htpasswd entry with a bcrypt hash (`htpasswd -nbB USER PASSWORD`);
//! - a line with no `:`: a token, kept only as its SHA-256.
//!
//! Checking a request against them (bcrypt, on threads of their own) is the proxy's part.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// Shortest token accepted in the file.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a credentials file holds. `Debug` shows only how many there are.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CredentialsFile {
    /// User name → bcrypt hash.
    pub users: HashMap<String, String>,
    /// SHA-256 of each token.
    pub tokens: Vec<[u8; 32]>,
}

impl std::fmt::Debug for CredentialsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} users, {} tokens", self.users.len(), self.tokens.len())
    }
}

/// A line the file may not hold; the text never includes a password or token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error(
        "line {line}: the password of {user:?} is not a bcrypt hash ($2a$/$2b$/$2y$); make \
         entries with `htpasswd -nbB USER PASSWORD`"
    )]
    NotBcrypt { line: usize, user: String },
    #[error(
        "line {line}: a token must be at least {MIN_TOKEN_LEN} characters (a line without `:` is a token)"
    )]
    ShortToken { line: usize },
    #[error("it holds no credentials")]
    Empty,
}

/// SHA-256 of a token, as the file's tokens are kept.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl CredentialsFile {
    pub fn parse(text: &str) -> Result<Self, CredentialsError> {
        let mut file = CredentialsFile::default();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some((user, hash)) if hash.starts_with("$2") => {
                    file.users.insert(user.to_owned(), hash.to_owned());
                }
                Some((user, _)) => {
                    return Err(CredentialsError::NotBcrypt {
                        line: index + 1,
                        user: user.into(),
                    })
                }
                None if line.len() < MIN_TOKEN_LEN => {
                    return Err(CredentialsError::ShortToken { line: index + 1 })
                }
                None => file.tokens.push(token_digest(line)),
            }
        }
        if file.users.is_empty() && file.tokens.is_empty() {
            return Err(CredentialsError::Empty);
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn users_tokens_comments_and_refusals() {
        let file = CredentialsFile::parse("# uploaders\nci:$2y$04$abc\n\n  some-long-token-x  \n").unwrap();
        assert_eq!(file.users.get("ci").map(String::as_str), Some("$2y$04$abc"));
        assert_eq!(file.tokens, [token_digest("some-long-token-x")]);
        assert_eq!(format!("{file:?}"), "1 users, 1 tokens");
        assert_eq!(
            CredentialsFile::parse("# a\nci:plaintext\n"),
            Err(CredentialsError::NotBcrypt {
                line: 2,
                user: "ci".into()
            })
        );
        assert_eq!(
            CredentialsFile::parse("short\n"),
            Err(CredentialsError::ShortToken { line: 1 })
        );
        assert_eq!(
            CredentialsFile::parse("# nothing\n\n"),
            Err(CredentialsError::Empty)
        );
        let shown = CredentialsFile::parse("ci:plaintext").unwrap_err().to_string();
        assert!(!shown.contains("plaintext"), "{shown}");
    }
}
