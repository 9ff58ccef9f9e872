//! A small netrc reader (machine/default/login/password; macdef skipped), as Nix and curl use.
//! Hand-written: the netrc crates on crates.io are unmaintained, and the format is tiny.

use std::collections::HashMap;

/// A login and password; `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub login: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("login", &self.login)
            .field("password", &"***")
            .finish()
    }
}

/// Credentials per host, plus the `default` entry.
#[derive(Clone, Debug, Default)]
pub struct Netrc {
    machines: HashMap<String, Credentials>,
    default: Option<Credentials>,
}

impl Netrc {
    pub fn parse(text: &str) -> Self {
        let mut netrc = Netrc::default();
        let mut current: Option<(Option<String>, Credentials)> = None;
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let mut tokens = line.split_whitespace();
            while let Some(token) = tokens.next() {
                match token {
                    "machine" | "default" => {
                        netrc.finish(current.take());
                        let host = if token == "machine" {
                            tokens.next().map(str::to_owned)
                        } else {
                            None
                        };
                        current = Some((
                            host,
                            Credentials {
                                login: String::new(),
                                password: String::new(),
                            },
                        ));
                    }
                    "login" | "password" | "account" => {
                        let value = tokens.next().unwrap_or_default().to_owned();
                        if let Some((_, creds)) = current.as_mut() {
                            match token {
                                "login" => creds.login = value,
                                "password" => creds.password = value,
                                _ => {}
                            }
                        }
                    }
                    "macdef" => {
                        // A macro body runs until the next empty line.
                        for body in lines.by_ref() {
                            if body.trim().is_empty() {
                                break;
                            }
                        }
                        break;
                    }
                    _ => {}
                }
            }
        }
        netrc.finish(current);
        netrc
    }

    fn finish(&mut self, entry: Option<(Option<String>, Credentials)>) {
        match entry {
            Some((Some(host), creds)) => {
                self.machines.entry(host).or_insert(creds);
            }
            Some((None, creds)) => self.default = Some(creds),
            None => {}
        }
    }

    /// Credentials for `host`, falling back to `default`.
    pub fn lookup(&self, host: &str) -> Option<&Credentials> {
        self.machines.get(host).or(self.default.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machines_default_and_macdef() {
        let netrc = Netrc::parse(
            "machine cache.example.com login alice password s3cret\n\
             macdef init\ncd /pub\n\n\
             machine other.example\n  login bob\n  password pw2\n\
             default login anon password guest\n",
        );
        let alice = netrc
            .lookup("cache.example.com")
            .map(|c| (c.login.as_str(), c.password.as_str()));
        assert_eq!(alice, Some(("alice", "s3cret")));
        assert_eq!(
            netrc.lookup("other.example").map(|c| c.login.as_str()),
            Some("bob")
        );
        assert_eq!(
            netrc.lookup("unknown.example").map(|c| c.login.as_str()),
            Some("anon")
        );
        let shown = format!("{:?}", netrc.lookup("cache.example.com"));
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn first_entry_for_a_host_wins_and_empty_file_has_none() {
        let netrc = Netrc::parse("machine h login a password 1\nmachine h login b password 2\n");
        assert_eq!(netrc.lookup("h").map(|c| c.login.as_str()), Some("a"));
        assert!(Netrc::parse("").lookup("h").is_none());
    }
}
