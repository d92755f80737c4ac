/**
 * Accepted jobs outlive an outage: infrastructure errors retry for JOB_RETRY_WINDOW_MS
 * (capped backoff), not for a fixed handful of attempts. Time-compressed: the backoff
 * cap is 200 ms, so the old 8 attempts would have given up within about 1.4 s; the
 * PostgreSQL the test starts itself stays down until every job has failed more than 8
 * times, and the jobs complete when it returns. A domain error still fails at once.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from '../support/processes.js';
import { stopOwnServices } from '../support/own-services.js';
import { configNames, startOwnPostgresApp } from '../support/stack.js';

afterAll(async () => {
  await stopOwnServices();
});

describe('retry window', () => {
  it('jobs accepted during a database outage longer than the old 8 attempts complete when it returns; a domain error fails at once', async () => {
    const { pg, app, close } = await startOwnPostgresApp('window', {
      DB_CONNECT_TIMEOUT_MS: '2000',
      JOB_RETRY_WINDOW_MS: '60000',
      JOB_RETRY_MAX_DELAY_MS: '200',
    });
    let down = false;
    try {
      await pg.stop();
      down = true;
      const jobs = await Promise.all(
        [0, 1, 2].map((i) => app.queues.submit('config.create', { name: `during-outage-${i}`, subnet: `10.${100 + i}.0.0/16` }, { actor: 'admin' })),
      );
      const attempts = async (id: string) => (await app.queues.find(id))?.attemptsMade ?? 0;
      await waitFor('every job to fail more than 8 times', async () => (await Promise.all(jobs.map((j) => attempts(j.id!)))).every((n) => n > 8), 60_000);
      for (const j of jobs) expect(await app.queues.view((await app.queues.find(j.id!))!)).toMatchObject({ state: expect.stringMatching(/waiting|delayed|active/) });

      await pg.start();
      down = false;
      await waitFor(
        'the jobs to complete',
        async () => (await Promise.all(jobs.map(async (j) => (await app.queues.view((await app.queues.find(j.id!))!)).state))).every((s) => s === 'completed'),
        60_000,
      );
      expect(await configNames(app)).toEqual(['during-outage-0', 'during-outage-1', 'during-outage-2']);

      const missing = await app.queues.submit('config.update', { id: '0190a0a0-0000-7000-8000-000000000000', name: 'x' }, { actor: 'admin' });
      await waitFor('the domain error', async () => (await app.queues.view((await app.queues.find(missing.id!))!)).state === 'failed', 30_000);
      const failed = await app.queues.view((await app.queues.find(missing.id!))!);
      expect(failed.error?.code).toBe('NOT_FOUND');
      expect(failed.attempts).toBe(1);
    } finally {
      if (down) await pg.start();
      await close();
    }
  });
});
