//! What an upstream URL's query says, as on a Nix substituter URL: `?priority=N` fixes its
//! priority (instead of its nix-cache-info's), and `?nar-host=HOST[:PORT]` (repeatable) lets
//! its narinfos name NARs on that other host (garnix serves NARs from a CDN). Without it, a
//! NAR URL off the upstream's origin is refused: the URL is not covered by the signature.

use url::Url;

/// The parameters of one upstream URL.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct UpstreamParams {
    pub priority: Option<u32>,
    pub nar_hosts: Vec<NarHost>,
}

/// A host (and port) an upstream's NARs may live on besides its own origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct NarHost {
    host: String,
    /// `None`: the scheme's default port.
    port: Option<u16>,
}

impl NarHost {
    fn parse(value: &str) -> Result<Self, String> {
        let bad = || format!("nar-host={value} is not HOST or HOST:PORT");
        if value.is_empty() || value.contains(['/', '@', '?', '#', '\\']) {
            return Err(bad());
        }
        // Parsed as an authority, so IPv6 literals and ports follow URL rules.
        let url = Url::parse(&format!("http://{value}/")).map_err(|_| bad())?;
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(bad)?;
        Ok(Self {
            host: host.to_owned(),
            port: url.port(),
        })
    }

    /// Whether `url` (http or https) lies on this host and port.
    pub(super) fn allows(&self, url: &Url) -> bool {
        let default = match url.scheme() {
            "http" => 80,
            "https" => 443,
            _ => return false,
        };
        let port = url.port().unwrap_or(default);
        url.host_str() == Some(self.host.as_str()) && port == self.port.unwrap_or(default)
    }
}

impl UpstreamParams {
    pub(super) fn parse(url: &Url) -> Result<Self, String> {
        let mut params = Self::default();
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "priority" => {
                    let n = value
                        .parse()
                        .map_err(|_| format!("priority={value} is not a number"))?;
                    params.priority = Some(n);
                }
                "nar-host" => params.nar_hosts.push(NarHost::parse(&value)?),
                other => {
                    return Err(format!(
                    "unknown parameter {other:?} (only ?priority=N and ?nar-host=HOST[:PORT] are understood)"
                ))
                }
            }
        }
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn params(url: &str) -> Result<UpstreamParams, String> {
        UpstreamParams::parse(&Url::parse(url).unwrap())
    }

    #[test]
    fn priority_and_nar_hosts() {
        let p = params("https://cache.example/?priority=30&nar-host=cdn.example&nar-host=127.0.0.1:8080")
            .unwrap();
        assert_eq!(p.priority, Some(30));
        let allows = |url: &str| p.nar_hosts.iter().any(|h| h.allows(&Url::parse(url).unwrap()));
        assert!(allows("https://cdn.example/nar/x.nar.zst"));
        assert!(allows("http://cdn.example:80/nar/x"));
        assert!(allows("http://127.0.0.1:8080/nar/x"));
        assert!(!allows("https://cdn.example:8443/nar/x"), "another port");
        assert!(!allows("https://evil.cdn.example/nar/x"));
        assert!(!allows("http://127.0.0.1:8081/nar/x"));
        assert!(!allows("ftp://cdn.example/nar/x"));
        assert_eq!(
            params("https://cache.example/").unwrap(),
            UpstreamParams::default()
        );
    }

    #[test]
    fn bad_parameters_are_refused() {
        for url in [
            "https://c.example/?priority=high",
            "https://c.example/?nar-host=",
            "https://c.example/?nar-host=cdn.example/path",
            "https://c.example/?nar-host=user@cdn.example",
            "https://c.example/?nar-host=cdn.example:99999",
            "https://c.example/?compression=zstd",
        ] {
            assert!(params(url).is_err(), "{url}");
        }
    }
}
