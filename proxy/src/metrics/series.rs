//! The names of the series every registered metric exposes, kept as the metrics are registered:
//! an empty family writes nothing to `/metrics`, yet dashboards and alerts name its series, and
//! a test checks each name they use against this list.

use prometheus_client::{
    metrics::{MetricType, TypedMetric},
    registry::{Metric, Registry, Unit},
};

/// A [`Registry`] that notes the series names of what is registered in it.
pub(super) struct Described<'a> {
    pub registry: &'a mut Registry,
    pub series: &'a mut Vec<String>,
    pub prefix: &'static str,
}

impl Described<'_> {
    pub fn register<M: Metric + TypedMetric>(&mut self, name: &str, help: &str, metric: M) {
        self.note(name, None, M::TYPE);
        self.registry.register(name, help, metric);
    }

    pub fn register_with_unit<M: Metric + TypedMetric>(
        &mut self,
        name: &str,
        help: &str,
        unit: Unit,
        metric: M,
    ) {
        self.note(name, Some(&unit), M::TYPE);
        self.registry.register_with_unit(name, help, unit, metric);
    }

    fn note(&mut self, name: &str, unit: Option<&Unit>, kind: MetricType) {
        let base = match unit {
            Some(unit) => format!("{}_{name}_{}", self.prefix, unit.as_str()),
            None => format!("{}_{name}", self.prefix),
        };
        let suffixes: &[&str] = match kind {
            MetricType::Counter => &["_total"],
            MetricType::Histogram => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        self.series.extend(suffixes.iter().map(|s| format!("{base}{s}")));
    }
}
