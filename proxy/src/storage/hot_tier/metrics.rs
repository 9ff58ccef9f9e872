//! What a replica's hot tier holds and how NAR reads went through it; registered with the
//! others in `metrics`.

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};

/// What the tier did with a NAR read (the `result` label of `nixcache_hot_tier_reads_total`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum TierRead {
    /// Served from the tier.
    Hit,
    /// From the store, copied into the tier as it streamed.
    Copied,
    /// From the store only: a range, too large, copied already, or its bytes were refused.
    Miss,
    /// The tier's file changed since it was verified, or is gone: read from the store.
    Changed,
}

impl TierRead {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Copied => "copied",
            Self::Miss => "miss",
            Self::Changed => "changed",
        }
    }
}

impl EncodeLabelValue for TierRead {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierReadLabels {
    pub result: TierRead,
}

/// Handles the tier updates itself; clones share the series.
#[derive(Clone, Debug, Default)]
pub struct HotTierMetrics {
    /// Bytes of its files, and of copies under way (reserved at their full size).
    pub bytes: Gauge,
    pub files: Gauge,
    /// NAR reads by what the tier did with them.
    pub reads: Family<TierReadLabels, Counter>,
}

impl HotTierMetrics {
    pub fn read(&self, result: TierRead) {
        self.reads.get_or_create(&TierReadLabels { result }).inc();
    }

    pub fn usage(&self, bytes: u64, files: usize) {
        self.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.files.set(i64::try_from(files).unwrap_or(i64::MAX));
    }
}
