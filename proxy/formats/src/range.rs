//! HTTP `Range` requests: a single byte range, resolved against the object's size.

/// An inclusive byte range already checked against the object's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// All of an object of `size` bytes; `None` when it is empty.
    pub fn whole(size: u64) -> Option<Self> {
        size.checked_sub(1).map(|end| Self { start: 0, end })
    }

    /// Number of bytes; a range always holds at least one.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }
}

/// A parsed single-range `Range: bytes=…` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// `bytes=N-` or `bytes=N-M`
    From { start: u64, end: Option<u64> },
    /// `bytes=-N`: the last N bytes
    Suffix(u64),
}

impl RangeSpec {
    /// Parses a header value. Multi-range and malformed values give `None`: the whole object is
    /// served, which RFC 9110 allows.
    pub fn parse(value: &str) -> Option<Self> {
        let spec = value.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (start, end) = spec.split_once('-')?;
        let (start, end) = (start.trim(), end.trim());
        if start.is_empty() {
            return end.parse().ok().map(RangeSpec::Suffix);
        }
        let start = start.parse().ok()?;
        let end = if end.is_empty() {
            None
        } else {
            Some(end.parse().ok()?)
        };
        match end {
            Some(end) if end < start => None,
            _ => Some(RangeSpec::From { start, end }),
        }
    }

    /// The bytes to send, or `None` when unsatisfiable (answered with 416).
    pub fn resolve(self, size: u64) -> Option<ByteRange> {
        match self {
            RangeSpec::From { start, .. } if start >= size => None,
            RangeSpec::From { start, end } => Some(ByteRange {
                start,
                end: end.map_or(size - 1, |e| e.min(size - 1)),
            }),
            RangeSpec::Suffix(0) => None,
            RangeSpec::Suffix(_) if size == 0 => None,
            RangeSpec::Suffix(n) => Some(ByteRange {
                start: size.saturating_sub(n),
                end: size - 1,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> Option<ByteRange> {
        Some(ByteRange { start, end })
    }

    #[test]
    fn parses_and_resolves_like_rfc_9110() {
        let resolve = |v: &str| RangeSpec::parse(v).and_then(|s| s.resolve(1000));
        assert_eq!(resolve("bytes=0-99"), r(0, 99));
        assert_eq!(resolve("bytes=212-"), r(212, 999));
        assert_eq!(resolve("bytes=990-5000"), r(990, 999));
        assert_eq!(resolve("bytes=-10"), r(990, 999));
        assert_eq!(resolve("bytes=-5000"), r(0, 999));
        assert_eq!(resolve("bytes=999-999"), r(999, 999));
        assert_eq!(
            RangeSpec::parse("bytes=1000-").and_then(|s| s.resolve(1000)),
            None
        );
        assert_eq!(RangeSpec::parse("bytes=-0").and_then(|s| s.resolve(1000)), None);
        assert_eq!(RangeSpec::parse("bytes=0-").and_then(|s| s.resolve(0)), None);
    }

    #[test]
    fn ignores_what_it_does_not_serve() {
        for v in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-1",
            "bytes=x-",
            "bytes=-",
            "0-1",
        ] {
            assert_eq!(RangeSpec::parse(v), None, "{v}");
        }
    }
}
