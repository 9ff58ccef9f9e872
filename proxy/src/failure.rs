//! How a failed command tells its user why: the error and each of its causes once, on one line.
//! Our errors name their cause in their own message and also return it as `source` (for code
//! that looks), so printing every link of the chain would say each cause twice.

/// `context: error: cause`, leaving out a cause that the link before it already spells out.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    let mut before = String::new();
    for link in err.chain() {
        let text = link.to_string();
        if before.is_empty() || !before.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        before = text;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {path} failed: {source}")]
    struct ReadFailed {
        path: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = anyhow::Error::new(ReadFailed {
            path: "/k",
            source: io,
        })
        .context("loading the key");
        assert_eq!(one_line(&err), "loading the key: reading /k failed: no such file");

        let bare = anyhow::anyhow!("no such file").context("loading the key");
        assert_eq!(one_line(&bare), "loading the key: no such file");
    }
}
