/**
 * `npm run bench [jobs|broker|snapshots|security|scale|pushes]`: every benchmark, one run, one table of figures
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
  // The 1,000-node figures: mesh.generate and its probes, then the push fan-out it causes.
  scale: async () => {
    await (await import('./scale-bench.js')).benchScale();
    await (await import('./push-bench.js')).benchPushes();
  },
  pushes: async () => (await import('./push-bench.js')).benchPushes(),
};
for (const [name, run] of Object.entries(suites)) {
  // `scale` runs the pushes suite too: a full run measures it once.
  if (only ? only === name : name !== 'pushes') await run();
}
printTable();
process.exit(0);
