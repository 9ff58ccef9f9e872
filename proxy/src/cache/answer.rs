//! What a NAR request is answered with, and where the answer came from.

use std::sync::Arc;

use nixcache_formats::range::RangeSpec;

use super::{
    fill::{Client, Fill},
    CacheError,
};
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
    /// Where the client is sent instead (`--s3-redirect`): a URL that is a credential until it
    /// expires, never logged. Then `body` is `None`.
    pub redirect: Option<String>,
}

impl NarResponse {
    /// An answer without a body yet (a HEAD's, or one a body or redirect is added to).
    pub fn headers_only(
        size: u64,
        range: Option<ByteRange>,
        status: CacheStatus,
        fixed_by_name: bool,
    ) -> Self {
        Self {
            size,
            range,
            body: None,
            status,
            fixed_by_name,
            redirect: None,
        }
    }
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

/// The answer for `client`, who counts for the fill while it waits and while its body streams;
/// `(status, fixed_by_name)` as the caller knows them.
pub(super) async fn follow_fill(
    fill: &Arc<Fill>,
    client: Client,
    range: Option<RangeSpec>,
    head: bool,
    (status, fixed_by_name): (CacheStatus, bool),
) -> Result<NarResponse, CacheError> {
    let size = fill.size().await?;
    let range = resolve(range, size)?;
    let body = match range.or(ByteRange::whole(size)) {
        Some(bytes) if !head => Some(fill.follow(bytes, client)),
        _ => None,
    };
    Ok(NarResponse {
        size,
        range,
        body,
        status,
        fixed_by_name,
        redirect: None,
    })
}

/// The byte range of an object of `size` a request asks for; 416 when it lies outside.
pub(super) fn resolve(range: Option<RangeSpec>, size: u64) -> Result<Option<ByteRange>, CacheError> {
    match range {
        None => Ok(None),
        Some(spec) => spec
            .resolve(size)
            .map(Some)
            .ok_or(CacheError::RangeNotSatisfiable { size }),
    }
}
