//! nixcache: a caching, verifying, re-signing proxy for Nix binary caches.
//!
//! `cli` parses flags, `app` wires the pieces, `http` is the protocol edge, `cache` the service
//! (lookups, upstream fills, verification), `upstream` the client side, `storage` and `db` the
//! two backends behind traits. Protocol types live in the `nixcache-protocol` crate.

pub mod app;
pub mod cache;
pub mod cli;
pub mod config;
pub mod db;
pub mod failure;
pub mod fsck;
pub mod gc;
pub mod http;
pub mod keys;
pub mod lease;
pub mod metrics;
pub mod pins;
pub mod redact;
pub mod schedule;
pub mod scratch;
pub mod storage;
pub mod tasks;
pub mod telemetry;
pub mod units;
pub mod upstream;
pub mod warm;
