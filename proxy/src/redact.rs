//! Secrets kept out of what is printed (errors, logs, `Debug`): a URL loses its password and
//! the query parameters that may carry one (`?password=…`, `?sslpassword=…`, `?token=…`).

/// What stands in for a hidden value.
const HIDDEN: &str = "***";

/// Parts of query parameter names that mark them as secret, compared case-insensitively. Broad
/// on purpose: hiding a harmless value costs a less useful message, showing a secret costs more.
const SECRET_NAME_PARTS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "credential",
    "signature",
];

/// `url` without its password and secret query parameters; a URL that does not parse is not
/// shown at all (where its secret would be is unknown).
pub fn url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<unparsable URL>".into();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some(HIDDEN));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_secret(&name) {
                    HIDDEN.to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// Whether a query parameter of this name may carry a secret.
fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_NAME_PARTS.iter().any(|part| name.contains(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_userinfo_and_query_are_hidden() {
        for (raw, shown) in [
            (
                "postgres://u:hunter2@db:5432/cache",
                "postgres://u:***@db:5432/cache",
            ),
            (
                "postgres://u@db/cache?password=hunter2&sslmode=require",
                "postgres://u@db/cache?password=***&sslmode=require",
            ),
            (
                "mysql://u@db/cache?PassWord=hunter2",
                "mysql://u@db/cache?PassWord=***",
            ),
            (
                "postgres://u@db/c?sslpassword=hunter2&pwd=hunter2&pass=hunter2",
                "postgres://u@db/c?sslpassword=***&pwd=***&pass=***",
            ),
            (
                "https://cache.example/?token=hunter2&api_key=hunter2&Secret=hunter2",
                "https://cache.example/?token=***&api_key=***&Secret=***",
            ),
            (
                "sqlite:///var/lib/db.sqlite?mode=rwc",
                "sqlite:///var/lib/db.sqlite?mode=rwc",
            ),
        ] {
            assert_eq!(url(raw), shown, "{raw}");
        }
    }

    #[test]
    fn encoded_names_and_unparsable_urls_stay_hidden() {
        // An encoded name is decoded before it is judged.
        assert!(!url("postgres://u@db/c?pass%77ord=hunter2").contains("hunter2"));
        assert_eq!(url("postgres://u:hunter2@[db/c"), "<unparsable URL>");
    }
}
