/**
 * `npm run bench [jobs|broker|snapshots|security|scale]`: every benchmark, one run, one table of figures
 * with ratios against baselines measured in the same run (machines here are noisy;
 * ratios travel, absolute times do not). Never part of `npm test`.
 */
import { benchBroker } from './broker-bench.js';
import { benchJobs } from './jobs-bench.js';
import { printTable } from './support.js';

const only = process.argv[2];
const suites: Record<string, () => Promise<void>> = {
  jobs: benchJobs,
  broker: benchBroker,
  snapshots: async () => (await import('./snapshot-bench.js')).benchSnapshots(),
  security: async () => (await import('./security-bench.js')).benchSecurity(),
  scale: async () => (await import('./scale-bench.js')).benchScale(),
};
for (const [name, run] of Object.entries(suites)) {
  if (!only || only === name) await run();
}
printTable();
process.exit(0);
