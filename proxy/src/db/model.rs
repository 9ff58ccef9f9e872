//! Domain records stored in the metadata database.

use nixcache_protocol::{NarFile, NarInfo, Sha256Hash, Signature};

/// The proxy's own signature over a narinfo, with the public key that made it, so a changed key
/// is noticed and the signature made again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySignature {
    pub public_key: String,
    pub sig: Signature,
}

/// A narinfo verified from an upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarInfoRecord {
    /// As the upstream sent it, with its signatures; `url` is the NAR's absolute upstream URL.
    pub info: NarInfo,
    /// The name under which this proxy serves (and stores) the NAR.
    pub nar_file: NarFile,
    pub proxy_sig: Option<ProxySignature>,
}

/// A NAR file present in storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarRecord {
    pub nar_file: NarFile,
    pub file_size: u64,
    /// The verified NarHash of its content.
    pub nar_hash: Sha256Hash,
}
