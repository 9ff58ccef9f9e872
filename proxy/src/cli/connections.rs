//! Limits on client connections (`serve`): how many, and how long one may sit without a request.

use std::time::Duration;

use clap::Args;

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
}
