//! `CredentialsFile::parse`, the upload credentials file (htpasswd lines and tokens). What it
//! accepts holds at least one credential, only bcrypt hashes for users and only digests of
//! tokens long enough; a refusal names a line that exists, and `Debug` shows only counts.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nixcache_formats::credentials::{token_digest, CredentialsError, CredentialsFile, MIN_TOKEN_LEN};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.lines().collect();
    match CredentialsFile::parse(&text) {
        Ok(file) => {
            assert!(!file.users.is_empty() || !file.tokens.is_empty());
            assert!(file.users.values().all(|hash| hash.starts_with("$2")));
            for digest in &file.tokens {
                let from = lines
                    .iter()
                    .map(|l| l.trim())
                    .find(|l| token_digest(l) == *digest);
                let token = from.unwrap_or_else(|| panic!("a token digest that no line gives"));
                assert!(token.len() >= MIN_TOKEN_LEN && !token.contains(':') && !token.starts_with('#'));
            }
            assert_eq!(
                format!("{file:?}"),
                format!("{} users, {} tokens", file.users.len(), file.tokens.len())
            );
        }
        Err(CredentialsError::NotBcrypt { line, user }) => {
            let bad = lines[line - 1].trim();
            assert_eq!(bad.split_once(':').map(|(u, _)| u), Some(user.as_str()));
        }
        Err(CredentialsError::ShortToken { line }) => {
            let bad = lines[line - 1].trim();
            assert!(bad.len() < MIN_TOKEN_LEN && !bad.contains(':'), "{bad:?}");
        }
        Err(CredentialsError::Empty) => {
            assert!(lines
                .iter()
                .all(|l| l.trim().is_empty() || l.trim().starts_with('#')));
        }
    }
});
