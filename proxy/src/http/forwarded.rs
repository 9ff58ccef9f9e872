//! The client behind a reverse proxy or load balancer (`--trusted-proxies`): a request whose
//! connection comes from a trusted address is taken to be from the address its
//! `X-Forwarded-For` names. Only prefetching uses it (each client's closure walk is followed
//! apart), so a forged header can at worst merge or split walks; it never grants access.

use std::{net::IpAddr, sync::Arc};

use axum::{
    extract::{Request, State},
    http::HeaderMap,
    middleware::Next,
    response::Response,
};
use ipnet::IpNet;

use super::ClientIp;

/// Entries of `X-Forwarded-For` looked at, from the right: a longer chain is cut there.
const MAX_HOPS: usize = 32;

/// The networks of `--trusted-proxies`.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        self.0.iter().any(|net| net.contains(&addr))
    }

    /// The client of a request whose connection came from `peer`: walking `X-Forwarded-For` from
    /// the right (the hop nearest us), each address counts while the one after it is trusted;
    /// the first one not trusted is the client. An entry that is not an address ends the walk
    /// at the last trusted hop, so a malformed header never hides who sent it.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        // Nearest first; a header that is not text ends the walk like a bad entry.
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            .flat_map(|value| match value.to_str() {
                Ok(text) => text.rsplit(',').map(Some).collect::<Vec<_>>(),
                Err(_) => vec![None],
            });
        for hop in hops.take(MAX_HOPS) {
            let Some(addr) = hop.and_then(parse_hop) else {
                break;
            };
            client = addr.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, or an address with a port (`1.2.3.4:5`, `[::1]:5`),
/// as some balancers write them.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// Replaces the request's client address (its connection's peer) with the one its trusted
/// proxies name. Layered on only when `--trusted-proxies` is set.
pub async fn resolve(
    State(trusted): State<Arc<TrustedProxies>>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(ClientIp(peer)) = request.extensions().get::<ClientIp>().copied() {
        let client = trusted.client(peer, request.headers());
        request.extensions_mut().insert(ClientIp(client));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse::<IpNet>().unwrap()).collect())
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append("x-forwarded-for", v.parse().unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn single_addresses_and_networks() {
        assert!(trusted(&["192.168.1.7/32"]).trusts(ip("192.168.1.7")));
        assert!(!trusted(&["192.168.1.7/32"]).trusts(ip("192.168.1.8")));
        assert!(trusted(&["fd00::/8"]).trusts(ip("fd12::1")));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            t.client(ip("203.0.113.9"), &headers(&["198.51.100.1"])),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let t = trusted(&["10.0.0.0/8"]);
        // A client's own forged entry (left) is passed over: the nearest untrusted hop wins.
        let h = headers(&["6.6.6.6, 198.51.100.1, 10.0.0.5"]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("198.51.100.1"));
        // Several headers read as one list, in order.
        let h = headers(&["6.6.6.6", "198.51.100.1", "10.0.0.5"]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("198.51.100.1"));
        // Ports, as some balancers add them.
        let h = headers(&["198.51.100.1:4711"]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("198.51.100.1"));
        let h = headers(&["[2001:db8::1]:4711"]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("2001:db8::1"));
    }

    #[test]
    fn trusted_all_the_way_gives_the_leftmost_and_garbage_stops_the_walk() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            t.client(ip("10.0.0.2"), &headers(&["10.0.0.9, 10.0.0.5"])),
            ip("10.0.0.9")
        );
        assert_eq!(
            t.client(ip("10.0.0.2"), &headers(&["198.51.100.1, unknown"])),
            ip("10.0.0.2")
        );
        assert_eq!(t.client(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&["198.51.100.1"]);
        assert_eq!(t.client(ip("::ffff:10.0.0.2"), &h), ip("198.51.100.1"));
    }
}
