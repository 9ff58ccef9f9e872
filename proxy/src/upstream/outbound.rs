//! Where upstream requests may go. An upstream's answers are not trusted to choose another
//! destination: a redirect stays on the origin it started from, and no request reaches cloud
//! metadata endpoints, by name or by address, unless the operator allows it
//! (`--upstream-allow-link-local`): link-local space (169.254.0.0/16, fe80::/10), also
//! IPv4-mapped or embedded by NAT64 (64:ff9b::/96, 64:ff9b:1::/48), and the metadata addresses
//! outside it (AWS's IPv6 `fd00:ec2::254`, Alibaba Cloud's `100.100.100.200`).
//!
//! The client also honours `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` (reqwest's
//! default, kept for corporate proxies). Through a proxy the resolver here resolves the proxy's
//! name only: the upstream's name is resolved by the proxy, and this filter cannot see where it
//! leads (address literals in `--upstream` are still refused at start).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
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

/// AWS's instance metadata service over IPv6 (Nitro instances).
const AWS_IMDS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
/// Alibaba Cloud's instance metadata service.
const ALIBABA_METADATA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);

/// Whether requests to `ip` are refused unless allowed: link-local space (169.254.0.0/16,
/// fe80::/10, also as IPv4-mapped IPv6 or embedded by NAT64) and the cloud metadata addresses
/// outside it.
pub fn is_refused(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6 == AWS_IMDS_V6
                || v6.to_ipv4_mapped().is_some_and(refused_v4)
                || nat64_embedded(v6).into_iter().any(refused_v4)
        }
    }
}

fn refused_v4(v4: Ipv4Addr) -> bool {
    v4.is_link_local() || v4 == ALIBABA_METADATA
}

/// The IPv4 addresses a NAT64 gateway may translate `v6` to (RFC 6052): the last 32 bits under
/// the well-known prefix 64:ff9b::/96; under the local-use 64:ff9b:1::/48, every layout its
/// sub-prefixes may use (/48, /56, /64, /96), since which one a network uses is not known here.
fn nat64_embedded(v6: Ipv6Addr) -> Vec<Ipv4Addr> {
    let b = v6.octets();
    let v4 = |i: [usize; 4]| Ipv4Addr::new(b[i[0]], b[i[1]], b[i[2]], b[i[3]]);
    let last = v4([12, 13, 14, 15]);
    match v6.segments() {
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => vec![last],
        // Bits 64..71 (octet 8) are the "u" octet, never part of the address.
        [0x64, 0xff9b, 1, ..] => vec![v4([6, 7, 9, 10]), v4([7, 9, 10, 11]), v4([9, 10, 11, 12]), last],
        _ => Vec::new(),
    }
}

/// Refuses a URL whose host is a refused address literal (names are checked when resolved).
pub fn check_literal(url: &Url) -> Result<(), String> {
    let ip = match url.host() {
        Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
        _ => return Ok(()),
    };
    if is_refused(ip) {
        return Err(format!(
            "{ip} is a link-local or cloud metadata address; \
             pass --upstream-allow-link-local if this upstream really is there"
        ));
    }
    Ok(())
}

/// The system resolver, without refused answers (see [`is_refused`]).
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
            let allowed: Vec<SocketAddr> = all.iter().copied().filter(|a| !is_refused(a.ip())).collect();
            if allowed.is_empty() && !all.is_empty() {
                let refused = format!(
                    "{host} resolves only to link-local or cloud metadata addresses ({all:?}): refused"
                );
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
            assert!(is_refused(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "169.255.0.1",
            "fec0::1",
            "::1",
            "2001:db8::1",
        ] {
            assert!(!is_refused(ip.parse().unwrap()), "{ip}");
        }
        assert!(check_literal(&Url::parse("http://169.254.169.254/").unwrap()).is_err());
        assert!(check_literal(&Url::parse("http://[fe80::1]:8080/").unwrap()).is_err());
        assert!(check_literal(&Url::parse("http://cache.example/").unwrap()).is_ok());
    }

    #[test]
    fn cloud_metadata_outside_link_local_space() {
        for ip in [
            "fd00:ec2::254",
            "100.100.100.200",
            "::ffff:100.100.100.200",
            // NAT64, well-known prefix: 169.254.169.254 and 100.100.100.200.
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::169.254.0.1",
            "64:ff9b::6464:64c8",
            // NAT64, local-use prefix, as /96, /64, /56 and /48 networks embed 169.254.169.254.
            "64:ff9b:1::a9fe:a9fe",
            "64:ff9b:1:0:a9:fea9:fe00:0",
            "64:ff9b:1:a9:fe:a9fe::",
            "64:ff9b:1:a9fe:a9:fe00::",
        ] {
            assert!(is_refused(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "fd00:ec2::253",
            "fd00:ec3::254",
            "100.100.100.201",
            "100.64.0.1",
            // NAT64 of ordinary addresses: 8.8.8.8, 192.0.2.1.
            "64:ff9b::808:808",
            "64:ff9b:1::c000:201",
            "64:ff9c::a9fe:a9fe",
        ] {
            assert!(!is_refused(ip.parse().unwrap()), "{ip}");
        }
        for url in [
            "http://[fd00:ec2::254]/",
            "http://100.100.100.200/latest",
            "http://[64:ff9b::a9fe:a9fe]/",
        ] {
            assert!(check_literal(&Url::parse(url).unwrap()).is_err(), "{url}");
        }
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_pass() {
        use dns::Resolve;
        let name: dns::Name = "localhost".parse().unwrap();
        let addrs: Vec<_> = NoLinkLocal.resolve(name).await.unwrap().collect();
        assert!(!addrs.is_empty());
    }
}
