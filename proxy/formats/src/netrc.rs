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

impl Credentials {
    fn empty() -> Self {
        Credentials {
            login: String::new(),
            password: String::new(),
        }
    }
}

/// An entry being read: its host (`None` for `default`) and credentials.
type Entry = (Option<String>, Credentials);

/// Credentials per host, plus the `default` entry.
#[derive(Clone, Debug, Default)]
pub struct Netrc {
    machines: HashMap<String, Credentials>,
    default: Option<Credentials>,
}

impl Netrc {
    /// Tokens are whitespace-separated across lines, as curl reads them: a `machine`'s name or
    /// a `password` may be on the next line. A `machine` without a name never becomes `default`.
    pub fn parse(text: &str) -> Self {
        let mut netrc = Netrc::default();
        let mut current: Option<Entry> = None;
        // A keyword whose value is the next token.
        let mut expecting: Option<&str> = None;
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            for token in line.split_whitespace() {
                if let Some(keyword) = expecting.take() {
                    if keyword == "machine" {
                        current = Some((Some(token.to_owned()), Credentials::empty()));
                    } else if let Some((_, creds)) = current.as_mut() {
                        match keyword {
                            "login" => creds.login = token.to_owned(),
                            "password" => creds.password = token.to_owned(),
                            _ => {}
                        }
                    }
                    continue;
                }
                match token {
                    "machine" | "default" => {
                        netrc.finish(current.take());
                        if token == "default" {
                            current = Some((None, Credentials::empty()));
                        } else {
                            expecting = Some(token);
                        }
                    }
                    "login" | "password" | "account" => expecting = Some(token),
                    "macdef" => {
                        // A macro body runs from the next line to the next empty line.
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

    fn finish(&mut self, entry: Option<Entry>) {
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

    #[test]
    fn tokens_run_across_lines_and_a_nameless_machine_is_not_default() {
        let netrc = Netrc::parse("machine\n  cache.example\n  login a\n  password\n b\n");
        assert_eq!(
            netrc
                .lookup("cache.example")
                .map(|c| (c.login.as_str(), c.password.as_str())),
            Some(("a", "b"))
        );
        assert!(netrc.lookup("elsewhere.example").is_none());
        let nameless = Netrc::parse("machine");
        assert!(nameless.lookup("any.example").is_none());
    }
}
