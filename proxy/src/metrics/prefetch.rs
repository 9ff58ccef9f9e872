//! What prefetching did: started, used by a client, wasted, skipped, and the NAR bytes of each.

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Unit,
};

use super::series::Described;
use super::{ObjectKind, PrefetchOutcome, PrefetchOutcomeLabels, PrefetchSkip, SkipLabels};

#[derive(Default)]
pub struct PrefetchMetrics {
    /// Prefetches by kind (narinfo, nar) and outcome (started, used, wasted).
    pub prefetches: Family<PrefetchOutcomeLabels, Counter>,
    /// NAR file bytes of prefetches by outcome.
    pub nar_bytes: Family<PrefetchOutcomeLabels, Counter>,
    /// Prefetches not started, by reason.
    pub skipped: Family<SkipLabels, Counter>,
}

impl PrefetchMetrics {
    pub(super) fn register(&self, r: &mut Described<'_>) {
        r.register(
            "prefetches",
            "Prefetches by kind (narinfo, nar) and outcome (started; used: a client asked for it; \
             wasted: none did within 10 minutes, or its download failed)",
            self.prefetches.clone(),
        );
        r.register_with_unit(
            "prefetch_nar",
            "NAR file bytes of prefetches by outcome (started, used, wasted)",
            Unit::Bytes,
            self.nar_bytes.clone(),
        );
        r.register(
            "prefetches_skipped",
            "Prefetches not started, by reason (budget: the trigger's budget is spent; busy: no \
             spare fill slot or prefetch queue full; too_large: past --prefetch-nar-max)",
            self.skipped.clone(),
        );
    }

    pub fn count(&self, kind: ObjectKind, outcome: PrefetchOutcome, n: u64) {
        if n > 0 {
            self.prefetches
                .get_or_create(&PrefetchOutcomeLabels { kind, outcome })
                .inc_by(n);
        }
    }

    pub fn nar_bytes(&self, outcome: PrefetchOutcome, bytes: u64) {
        let labels = PrefetchOutcomeLabels {
            kind: ObjectKind::Nar,
            outcome,
        };
        self.nar_bytes.get_or_create(&labels).inc_by(bytes);
    }

    pub fn skipped(&self, kind: ObjectKind, reason: PrefetchSkip) {
        self.skipped.get_or_create(&SkipLabels { kind, reason }).inc();
    }
}
