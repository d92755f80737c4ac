/**
 * Honest answers under outages: with Redis down, or PostgreSQL frozen (SIGSTOP) while
 * the API checks a submission, `POST /api/v1/jobs` answers 503 with Retry-After within
 * SUBMIT_TIMEOUT_MS, and once the service is back none of those submissions is ever
 * applied. Redis and PostgreSQL here are instances the test starts itself.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { LightMyRequestResponse } from 'fastify';
import { buildApi } from '../../src/api/app.js';
import type { AppContext } from '../../src/bin/bootstrap.js';
import { JOBS } from '../../src/jobs/table.js';
import { DIALECTS } from '../support/db.js';
import { waitFor } from '../support/processes.js';
import { basic, configNames, startOwnPostgresApp, startStack } from '../support/stack.js';
import { startOwnRedis, stopOwnServices } from '../support/own-services.js';

const ADMIN_PASSWORD = 'deadline-admin-pw';
const SUBMIT_TIMEOUT_MS = 2_000;
/** Scheduling slack on a shared machine; the point is "bounded", not a latency figure. */
const SLACK_MS = 1_500;

afterAll(async () => {
  await stopOwnServices();
});


/** The names of every config.create job Redis holds, in any state. */
const submitted = async (app: AppContext) =>
  ((await app.queues.queue('operations').getJobs(['completed', 'failed', 'waiting', 'delayed', 'active', 'prioritized'])) as { name: string; data: { payload: { name: string } } }[])
    .filter((j) => j.name === 'config.create')
    .map((j) => j.data.payload.name)
    .sort();

/** Five config.create submissions at once, each with how long its answer took. */
const ghosts = (submit: (payload: object) => Promise<LightMyRequestResponse>) =>
  Promise.all(
    [0, 1, 2, 3, 4].map(async (i) => {
      const started = Date.now();
      const res = await submit({ type: 'config.create', data: { name: `ghost-${i}`, subnet: `10.${81 + i}.0.0/16` } });
      return { res, ms: Date.now() - started };
    }),
  );

function expect503(res: LightMyRequestResponse, ms: number): void {
  expect(res.statusCode, res.body).toBe(503);
  expect(res.json().error.code).toBe('UNAVAILABLE');
  expect(Number(res.headers['retry-after'])).toBeGreaterThan(0);
  expect(ms).toBeLessThan(SUBMIT_TIMEOUT_MS + SLACK_MS);
}

describe.each(DIALECTS)('Redis down (%s)', (dialect) => {
  it('submissions answer 503 with Retry-After within SUBMIT_TIMEOUT_MS, and none is applied when Redis returns', async () => {
    const redis = await startOwnRedis({ aof: true });
    const s = await startStack(dialect, 'redis_down', {
      adminPassword: ADMIN_PASSWORD,
      env: { REDIS_URL: redis.url, REDIS_DURABILITY: 'aof', SUBMIT_TIMEOUT_MS: String(SUBMIT_TIMEOUT_MS) },
    });
    try {
      await s.job('config.create', { name: 'before', subnet: '10.80.0.0/16' });
      await redis.stop();
      const answers = await ghosts((payload) => s.call({ method: 'POST', url: '/api/v1/jobs', payload }));
      for (const { res, ms } of answers) expect503(res, ms);

      await redis.start();
      await waitFor('the API to reach Redis again', async () => s.app.queues.connection.status === 'ready', 30_000);
      // Jobs run in order: once this one ran, anything accepted before it ran too.
      await s.job('config.create', { name: 'after', subnet: '10.90.0.0/16' });
      expect(await configNames(s.app)).toEqual(['after', 'before']);
      expect(await submitted(s.app)).toEqual(['after', 'before']);
    } finally {
      await s.stop();
      await redis.stop();
    }
  });
});

describe('PostgreSQL frozen (SIGSTOP) during the API checks', () => {
  it('submissions answer 503 with Retry-After within SUBMIT_TIMEOUT_MS, and none is applied after SIGCONT', async () => {
    const { pg, app, close } = await startOwnPostgresApp('frozen', { ADMIN_PASSWORD, SUBMIT_TIMEOUT_MS: String(SUBMIT_TIMEOUT_MS) });
    const api = await buildApi(app);
    const call = (payload: unknown, wait = 0) =>
      api.inject({ method: 'POST', url: `/api/v1/jobs${wait ? `?wait=${wait}` : ''}`, headers: basic('admin', ADMIN_PASSWORD), payload: payload as object });
    try {
      expect((await call({ type: 'config.create', data: { name: 'before', subnet: '10.80.0.0/16' } }, 20_000)).statusCode).toBe(200);

      pg.freeze();
      let answers: Awaited<ReturnType<typeof ghosts>>;
      try {
        answers = await ghosts((payload) => call(payload));
      } finally {
        pg.thaw();
      }
      for (const { res, ms } of answers) expect503(res, ms);

      // Frozen once the request is past authentication, in the middle of the precheck:
      // the precheck's own deadline answers.
      const def = JOBS['config.create'] as { precheck?: (...args: unknown[]) => Promise<void> };
      const original = def.precheck!;
      def.precheck = async (...args) => {
        pg.freeze();
        return original(...args);
      };
      try {
        const started = Date.now();
        const res = await call({ type: 'config.create', data: { name: 'ghost-in-precheck', subnet: '10.89.0.0/16' } });
        expect503(res, Date.now() - started);
        expect(res.json().error.message).toMatch(/the database did not answer within \d+ ms; nothing was submitted/);
      } finally {
        def.precheck = original;
        pg.thaw();
      }

      // The frozen reads finish now; nothing may follow them into Redis.
      const after = await waitFor(
        'PostgreSQL to answer again',
        async () => {
          const res = await call({ type: 'config.create', data: { name: 'after', subnet: '10.90.0.0/16' } }, 20_000);
          return res.statusCode === 503 ? undefined : res;
        },
        30_000,
        200,
      );
      expect(after.statusCode, after.body).toBe(200);
      expect(await configNames(app)).toEqual(['after', 'before']);
      expect(await submitted(app)).toEqual(['after', 'before']);
    } finally {
      pg.thaw();
      await api.close();
      await close();
      await pg.stop();
    }
  });
});
