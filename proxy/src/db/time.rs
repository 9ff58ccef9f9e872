//! Moments as the metadata store records them. Access and lease expiry times are stored in
//! milliseconds, creation times (`created_at`) in seconds; callers deal in [`Timestamp`] only,
//! and the store picks the unit of each column.

use std::{
    ops::{Add, Sub},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// A moment, in milliseconds since the Unix epoch (by this machine's clock).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self(millis(since_epoch))
    }

    pub const fn from_unix_ms(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn unix_ms(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch (the unit of `created_at` columns).
    pub const fn unix_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }
}

/// Saturating: a moment far away stays representable.
impl Add<Duration> for Timestamp {
    type Output = Self;
    fn add(self, by: Duration) -> Self {
        Self(self.0.saturating_add(millis(by)))
    }
}

/// Saturating, like `Add`.
impl Sub<Duration> for Timestamp {
    type Output = Self;
    fn sub(self, by: Duration) -> Self {
        Self(self.0.saturating_sub(millis(by)))
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_and_seconds_round_down() {
        let t = Timestamp::from_unix_ms(1_999);
        assert_eq!((t + Duration::from_millis(1)).unix_ms(), 2_000);
        assert_eq!((t - Duration::from_secs(2)).unix_ms(), -1);
        assert_eq!(t.unix_secs(), 1);
        assert_eq!(Timestamp::from_unix_ms(-1).unix_secs(), -1);
        assert_eq!((t + Duration::MAX).unix_ms(), i64::MAX);
        assert_eq!(
            (Timestamp::from_unix_ms(i64::MIN + 5) - Duration::MAX).unix_ms(),
            i64::MIN
        );
        assert!(Timestamp::now() > Timestamp::from_unix_ms(1_700_000_000_000));
    }
}
