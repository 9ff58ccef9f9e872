//! Parsers and decoders for the bytes nixcache reads from outside: the `Range` header, netrc
//! files, the upload credentials file, the config file, compressed NAR files and `Content-Encoding`s. None does I/O
//! (they take text or a reader), and each is fuzzed (`fuzz/`): the fuzzers build this crate and
//! the protocol crate, not the proxy's database and S3 dependencies.

pub mod content_encoding;
pub mod credentials;
pub mod nar_digest;
pub mod netrc;
pub mod range;
pub mod settings;
