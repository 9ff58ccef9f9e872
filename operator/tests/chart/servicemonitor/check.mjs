// Validates ServiceMonitor objects (a JSON array on stdin) with @kubernetes-models/prometheus-operator,
// whose validators are generated from prometheus-operator's Go API types (field types, required
// fields, enums and patterns such as the Duration of `interval`). It does NOT reject unknown
// fields; operator/tests/chart.rs checks the ServiceMonitor's fields itself.
// Usage: node check.mjs < objects.json   (exit 1 and one line per error when any is invalid)
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const objects = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const object of objects) {
  const name = object?.metadata?.name ?? "?";
  try {
    new ServiceMonitor(object).validate();
    console.log(`OK servicemonitor/${name}`);
  } catch (error) {
    failed++;
    console.log(`ERROR servicemonitor/${name}: ${error.message}`);
  }
}
process.exit(failed ? 1 : 0);
