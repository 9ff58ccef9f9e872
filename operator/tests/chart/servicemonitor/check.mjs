// Validates the chart's Prometheus operator objects (ServiceMonitor, PodMonitor, PrometheusRule; a
// JSON array on stdin) with @kubernetes-models/prometheus-operator, whose validators are generated
// from prometheus-operator's Go API types (field types, required fields, enums and patterns such
// as the Duration of `interval`). It does NOT reject unknown fields; operator/tests/chart.rs and
// chart_monitoring.rs check the objects' fields themselves.
// Usage: node check.mjs < objects.json   (exit 1 and one line per error when any is invalid)
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const kinds = { ServiceMonitor, PodMonitor, PrometheusRule };
const objects = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const object of objects) {
  const name = object?.metadata?.name ?? "?";
  const kind = object?.kind ?? "?";
  const model = kinds[kind];
  try {
    if (!model) throw new Error(`no validator for kind ${kind}`);
    new model(object).validate();
    console.log(`OK ${kind.toLowerCase()}/${name}`);
  } catch (error) {
    failed++;
    console.log(`ERROR ${kind.toLowerCase()}/${name}: ${error.message}`);
  }
}
process.exit(failed ? 1 : 0);
