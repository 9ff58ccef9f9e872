//! Nix binary cache protocol types, free of I/O.
//!
//! - [`nixbase32`] — Nix's base-32 encoding;
//! - [`Sha256Hash`] — digests in Nix's text forms;
//! - [`StorePath`], [`StorePathHash`] — `/nix/store/<hash>-<name>`;
//! - [`NarInfo`], [`fingerprint`] — narinfo files and what their signatures cover;
//! - [`SigningKey`], [`PublicKey`], [`Signature`] — Ed25519 keys in Nix's `name:base64` format;
//! - [`CacheInfo`] — `nix-cache-info`;
//! - [`NarFile`], [`parse_narinfo_name`] — validated HTTP request paths;
//! - [`SideFile`] — NAR listings and build logs;
//! - [`BuildTraceKey`], [`BuildTrace`] — build traces of content-addressed derivations.
//!
//! Every public item is also re-exported at the crate root.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod build_trace;
pub mod cache_info;
pub mod compression;
pub mod hash;
pub mod http_paths;
pub mod narinfo;
pub mod nixbase32;
pub mod side_file;
pub mod signing;
pub mod store_path;

pub use build_trace::{
    BuildTrace, BuildTraceError, BuildTraceKey, MAX_BUILD_TRACE, MAX_OUTPUT_NAME, MIME_BUILD_TRACE,
};
pub use cache_info::{CacheInfo, CacheInfoError};
pub use compression::Compression;
pub use hash::{HashError, Sha256Hash};
pub use http_paths::{
    narinfo_name, parse_narinfo_name, NarFile, PathError, MIME_CACHE_INFO, MIME_NAR, MIME_NARINFO,
};
pub use narinfo::{fingerprint, NarInfo, NarInfoError};
pub use nixbase32::DecodeError;
pub use side_file::{SideFile, SideFileError, MIME_LISTING, MIME_LOG};
pub use signing::{KeyError, PublicKey, Signature, SigningKey};
pub use store_path::{StorePath, StorePathError, StorePathHash, STORE_DIR};
