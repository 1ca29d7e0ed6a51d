// Type-checks the provisioned dashboard against Grafana's own schema (@grafana/schema):
//   node embed.mjs && tsc --strict --noEmit -p tsconfig.json
import dashboardFile from "../dashboards/platform.json";
import { dashboard as dashboardLiteral } from "./generated/platform";
import type { DashboardJson, DashboardJsonWidened } from "./schema";

// The file itself, as `import` types it: structure, required fields and value types.
export const fromFile: DashboardJsonWidened = dashboardFile;

// The same document as an object literal (generated/platform.ts, written by embed.mjs from the file):
// every enum and literal value, and no key the schema does not know.
export const literal: DashboardJson = dashboardLiteral;
