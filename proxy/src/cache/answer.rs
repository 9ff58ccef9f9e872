//! What a NAR request is answered with, and where the answer came from.

use crate::storage::{ByteRange, ByteStream};

/// A NAR answer: the file's size, the range being sent (if any) and the bytes.
pub struct NarResponse {
    pub size: u64,
    pub range: Option<ByteRange>,
    pub body: Option<ByteStream>,
    pub status: CacheStatus,
    /// Whether the file's name fixes its bytes (a strong validator), or only the NAR they
    /// decompress to.
    pub fixed_by_name: bool,
}

/// Where an answer came from (the `X-Cache-Status` header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// Stored here already.
    Hit,
    /// Not stored: looked up or downloaded for this request.
    Miss,
    /// Joined a download another request started.
    Joined,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Joined => "JOINED",
        }
    }
}

/// Why a client asks: `GET` to fetch it, which may start prefetches (for that client's walk:
/// its address, when known); `HEAD` to probe, which never does (`nix copy --to` probes every
/// path it might upload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    Fetch { client: Option<std::net::IpAddr> },
    Probe,
}
