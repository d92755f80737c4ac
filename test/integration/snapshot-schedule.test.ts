/**
 * Scheduled backups: with SNAPSHOT_SCHEDULE set, the workers register a job scheduler and
 * exports appear on the pattern (here every second), pruned to SNAPSHOT_KEEP; a worker
 * started without it removes the scheduler and no export follows.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JOBS } from '../../src/jobs/table.js';
import { SNAPSHOT_SCHEDULER_ID } from '../../src/jobs/snapshot-schedule.js';
import { startWorkers } from '../../src/jobs/worker.js';
import { DIALECTS } from '../support/db.js';
import { waitFor } from '../support/processes.js';
import { startStack, type Stack } from '../support/stack.js';

describe.each(DIALECTS)('scheduled snapshot exports on %s', (dialect) => {
  let s: Stack;

  beforeAll(async () => {
    s = await startStack(dialect, 'schedule', { adminPassword: 'schedule-admin-pw', env: { SNAPSHOT_SCHEDULE: '* * * * * *', SNAPSHOT_KEEP: '2' } });
  });

  afterAll(async () => {
    await s?.stop();
  });

  const queue = () => s.app.queues.queue(JOBS['snapshot.export'].queue);
  const exports = async () => (await s.get<{ items: { id: string; createdAt: string }[] }>('/api/v1/snapshots?limit=100')).items;
  const scheduledDone = async () => (await queue().getJobs(['completed'], 0, 1000)).filter((j) => j.name === 'snapshot.export').length;

  it('exports on the schedule and keeps SNAPSHOT_KEEP of them', async () => {
    const scheduler = await queue().getJobScheduler(SNAPSHOT_SCHEDULER_ID);
    expect(scheduler).toMatchObject({ pattern: '* * * * * *' });
    await waitFor('three scheduled exports', async () => (await scheduledDone()) >= 3, 30_000);
    const kept = await exports();
    expect(kept).toHaveLength(2);
    // Fresh exports: no readiness warning.
    const ready = await s.call({ method: 'GET', url: '/readyz' });
    expect(ready.json<{ warnings: string[] }>().warnings.filter((w) => w.includes('SNAPSHOT_SCHEDULE'))).toEqual([]);
  });

  it('a worker started without SNAPSHOT_SCHEDULE removes the scheduler, and exports stop', async () => {
    const unscheduled = await startWorkers({ ...s.app, config: { ...s.app.config, snapshotSchedule: undefined } }, { processMetrics: false });
    try {
      expect(await queue().getJobScheduler(SNAPSHOT_SCHEDULER_ID)).toBeUndefined();
      // Whatever was already due may still run; after that, nothing new is added.
      await waitFor('queue settled', async () => (await queue().getJobCounts('waiting', 'active', 'delayed')).waiting === 0, 10_000);
      await waitFor('no active export', async () => (await queue().getActiveCount()) === 0, 10_000);
      const settled = await scheduledDone();
      const delayed = await queue().getDelayedCount();
      await new Promise((r) => setTimeout(r, 2_500));
      expect((await scheduledDone()) - settled).toBeLessThanOrEqual(delayed);
      expect(await queue().getDelayedCount()).toBe(0);
    } finally {
      await unscheduled.close();
    }
  });
});
