/**
 * The worker's per-job histograms (src/jobs/job-histogram.ts) are scraped as exactly what
 * prom-client's own Histogram gives for the same observations: text and JSON, every
 * bucket, +Inf, sum and count, labels in the same order.
 */
import { Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { JobHistogram } from '../../src/jobs/job-histogram.js';

const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const HELP = 'Run time of each attempt, by job type and outcome';

describe('job histograms', () => {
  it('scrape as prom-client histograms fed the same observations', async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const fast = new JobHistogram<'type' | 'status'>('meshq_job_duration_seconds', HELP, BUCKETS, ours);
    const reference = new Histogram({ name: 'meshq_job_duration_seconds', help: HELP, labelNames: ['type', 'status'] as const, buckets: BUCKETS, registers: [theirs] });
    const values = [0, 0.004, 0.005, 0.0051, 0.3, 1, 2.49, 299, 300, 301, 1e6, 0.1 + 0.2];
    const labelSets = [
      { type: 'node.update', status: 'completed' },
      { type: 'node.update', status: 'retried' },
      { type: 'unknown', status: 'failed' },
    ];
    values.forEach((v, i) => {
      const labels = labelSets[i % labelSets.length]!;
      fast.observe(fast.series(`${labels.type} ${labels.status}`, () => labels), v);
      reference.observe(labels, v);
    });
    expect(await ours.metrics()).toBe(await theirs.metrics());
    expect(await ours.getMetricsAsJSON()).toEqual(await theirs.getMetricsAsJSON());

    ours.resetMetrics();
    theirs.resetMetrics();
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });
});
