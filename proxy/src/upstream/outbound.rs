//! Where upstream requests may go. An upstream's answers are not trusted to choose another
//! destination: a redirect stays on the origin it started from, and no request reaches
//! link-local space (169.254.0.0/16, fe80::/10: cloud metadata endpoints), by name or by address,
//! unless the operator allows it.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use reqwest::{dns, redirect};
use url::{Host, Url};

/// Redirects followed per request, all on the first URL's origin.
const MAX_REDIRECTS: usize = 5;

/// Why a redirect was not followed.
#[derive(Debug, thiserror::Error)]
#[error("redirect to {to} refused: an upstream may redirect only within its own origin {origin}")]
struct CrossOriginRedirect {
    to: String,
    origin: String,
}

/// Follows redirects only within the origin of the request's first URL.
pub fn redirect_policy() -> redirect::Policy {
    redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else {
            return attempt.stop();
        };
        if attempt.url().origin() != first.origin() {
            let refused = CrossOriginRedirect {
                to: attempt.url().to_string(),
                origin: first.origin().ascii_serialization(),
            };
            return attempt.error(refused);
        }
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        attempt.follow()
    })
}

/// 169.254.0.0/16 and fe80::/10, also as IPv4-mapped IPv6.
pub fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.is_link_local(),
            None => (v6.segments()[0] & 0xffc0) == 0xfe80,
        },
    }
}

/// Refuses a URL whose host is a link-local address literal (names are checked when resolved).
pub fn check_literal(url: &Url) -> Result<(), String> {
    let ip = match url.host() {
        Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
        _ => return Ok(()),
    };
    if is_link_local(ip) {
        return Err(format!(
            "{ip} is a link-local address (cloud metadata lives there); \
             pass --upstream-allow-link-local if this upstream really is there"
        ));
    }
    Ok(())
}

/// The system resolver, without link-local answers.
pub struct NoLinkLocal;

impl NoLinkLocal {
    pub fn shared() -> Arc<Self> {
        Arc::new(Self)
    }
}

impl dns::Resolve for NoLinkLocal {
    fn resolve(&self, name: dns::Name) -> dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = all.iter().copied().filter(|a| !is_link_local(a.ip())).collect();
            if allowed.is_empty() && !all.is_empty() {
                let refused = format!("{host} resolves only to link-local addresses ({all:?}): refused");
                return Err(refused.into());
            }
            Ok(Box::new(allowed.into_iter()) as dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn link_local_space_in_every_spelling() {
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "febf::1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_link_local(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "169.255.0.1",
            "fec0::1",
            "::1",
            "2001:db8::1",
        ] {
            assert!(!is_link_local(ip.parse().unwrap()), "{ip}");
        }
        assert!(check_literal(&Url::parse("http://169.254.169.254/").unwrap()).is_err());
        assert!(check_literal(&Url::parse("http://[fe80::1]:8080/").unwrap()).is_err());
        assert!(check_literal(&Url::parse("http://cache.example/").unwrap()).is_ok());
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_pass() {
        use dns::Resolve;
        let name: dns::Name = "localhost".parse().unwrap();
        let addrs: Vec<_> = NoLinkLocal.resolve(name).await.unwrap().collect();
        assert!(!addrs.is_empty());
    }
}
