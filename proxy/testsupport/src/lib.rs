//! Servers that nixcache's tests start and stop themselves: a private PostgreSQL
//! ([`postgres::PgServer`]) and an S3 server ([`s3::S3sFs`]). A crate of its own, used only as a
//! dev-dependency (and by the e2e crate), so none of it is compiled into the `nixcache` binary;
//! it knows nothing of nixcache's types, which is what lets the proxy's own unit tests use it.

pub mod postgres;
pub mod s3;
