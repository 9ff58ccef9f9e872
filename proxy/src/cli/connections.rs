//! Limits on client connections (`serve`): how many, and how long one may sit without a request.

use std::{net::IpAddr, time::Duration};

use clap::Args;
use ipnet::IpNet;

#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Client connections served at once. At the limit, the connection that has waited longest
    /// without a request (idle, or still sending its headers) is closed to make room; when all
    /// have a request in flight, a few more are taken that answer only /healthz and /readyz.
    #[arg(long, env = "NIXCACHE_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Time allowed for a request's headers, from the connection's opening or the request's
    /// first byte; a connection still sending them then is closed.
    #[arg(long, env = "NIXCACHE_HEADER_READ_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// How long a keep-alive connection may wait for its next request (longer than a load
    /// balancer's own idle timeout, e.g. 60 s, so the proxy is never the side that closes a
    /// connection the balancer is about to reuse). A response in progress is never cut by it.
    #[arg(long, env = "NIXCACHE_IDLE_TIMEOUT", default_value = "90s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// How long a response may wait for a client that takes no more bytes (its receive window
    /// stays shut): then the connection is closed. A response waiting for its own data (a slow
    /// upstream) is not timed by it.
    #[arg(long, env = "NIXCACHE_SEND_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub send_timeout: Duration,

    /// Reverse proxies and load balancers (addresses or ADDRESS/PREFIX, comma-separated) whose
    /// X-Forwarded-For is believed: a request from one of them counts as from the client that
    /// header names, so clients behind an ingress keep their own prefetch walks.
    #[arg(long, env = "NIXCACHE_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_trusted_net)]
    pub trusted_proxies: Vec<IpNet>,
}

/// `10.0.0.0/8`, or one address (`10.1.2.3`); host bits of a network are dropped.
pub fn parse_trusted_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        // Peers are compared as IPv4 when they are IPv4-mapped: so are the networks.
        if let IpNet::V6(v6) = net {
            if let (Some(v4), Some(len)) = (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96)) {
                return ipnet::Ipv4Net::new(v4, len)
                    .map(|n| IpNet::V4(n.trunc()))
                    .map_err(|e| e.to_string());
            }
        }
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(|addr| IpNet::from(addr.to_canonical()))
        .map_err(|_| format!("`{text}` is neither an address nor a network (ADDRESS/PREFIX)"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn trusted_nets_parse() {
        assert_eq!(
            parse_trusted_net("10.1.2.3/8").unwrap(),
            "10.0.0.0/8".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_trusted_net(" 10.1.2.3").unwrap(),
            "10.1.2.3/32".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_trusted_net("::1").unwrap(),
            "::1/128".parse::<IpNet>().unwrap()
        );
        let err = parse_trusted_net("10.0.0.0/33").unwrap_err();
        assert!(err.contains("10.0.0.0/33"), "{err}");
        assert!(parse_trusted_net("ingress").is_err());
    }
}
