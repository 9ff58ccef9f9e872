//! Helpers for tests of this crate, its integration tests and the e2e crate; not part of the API.

pub mod postgres;
pub mod s3;
