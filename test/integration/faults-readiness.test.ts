/**
 * Readiness that means it: /readyz fails when the database answers but cannot be
 * written, and warns (still ready) when no worker serves a queue, as does a submission
 * to such a queue, and warns (still ready, at once) while another connection holds the
 * SQLite write lock. Settings that live only in Redis come back when a Redis without
 * persistence (the test's own) restarts empty.
 */
import Database from 'better-sqlite3';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { adminQuery, DIALECTS } from '../support/db.js';
import { waitFor } from '../support/processes.js';
import { startStack } from '../support/stack.js';
import { startOwnRedis, stopOwnServices } from '../support/own-services.js';

const ADMIN_PASSWORD = 'readiness-admin-pw';

afterAll(async () => {
  await stopOwnServices();
});

describe.each(DIALECTS)('readiness (%s)', (dialect) => {
  it('fails while the database cannot be written, naming the database (its error only to a reader), and recovers', async () => {
    const s = await startStack(dialect, 'readonly_db', { adminPassword: ADMIN_PASSWORD });
    const readOnly = async (on: boolean) => {
      if (dialect === 'sqlite') {
        await s.app.orm.em.getConnection().execute(`pragma query_only = ${on ? 1 : 0}`);
      } else {
        const name = new URL(s.db.url).pathname.slice(1);
        await adminQuery(`alter database "${name}" set default_transaction_read_only = ${on ? 'on' : 'off'}`);
        // Pooled connections keep the setting they started with: make the pool reconnect.
        await adminQuery('select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [name]);
      }
    };
    try {
      expect((await s.api.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200);
      await readOnly(true);
      const open = await waitFor('readiness to fail', async () => {
        const res = await s.api.inject({ method: 'GET', url: '/readyz' });
        return res.statusCode === 503 ? res : undefined;
      }, 20_000);
      expect(open.json()).toMatchObject({ status: 'unavailable', failed: ['database'], checks: { database: { ok: false } } });
      expect(open.json().checks.database).toEqual({ ok: false });
      const detailed = await s.call({ method: 'GET', url: '/readyz' });
      expect(detailed.json().checks.database.error).toMatch(/^cannot write: .*read.?only/i);
      await readOnly(false);
      await waitFor('readiness to recover', async () => (await s.api.inject({ method: 'GET', url: '/readyz' })).statusCode === 200, 20_000);
    } finally {
      await readOnly(false).catch(() => undefined);
      await s.stop();
    }
  });
});

describe('SQLite write lock held by another process', () => {
  it('/readyz answers at once, ready with a warning, instead of waiting for the lock', async () => {
    const s = await startStack('sqlite', 'lock_held', { adminPassword: ADMIN_PASSWORD });
    // Another connection to the same file, as a second process would open it.
    const other = new Database(s.db.url.replace(/^sqlite:/, ''));
    try {
      other.exec('begin immediate');
      const started = Date.now();
      const ready = await s.api.inject({ method: 'GET', url: '/readyz' });
      const took = Date.now() - started;
      expect(ready.statusCode).toBe(200);
      expect(ready.json().warnings).toContain(
        'the SQLite write lock is held by another connection (a long job, a restore or another process): writes wait for it',
      );
      // Loose: the probe does not wait out the busy timeout (5 s) or its own bound (3 s).
      expect(took).toBeLessThan(2_000);
      other.exec('rollback');
      const free = await s.api.inject({ method: 'GET', url: '/readyz' });
      expect(free.statusCode).toBe(200);
      expect(free.json().warnings.some((w: string) => w.includes('write lock'))).toBe(false);
    } finally {
      if (other.inTransaction) other.exec('rollback');
      other.close();
      await s.stop();
    }
  });
});

describe('queues no worker serves', () => {
  it('/readyz stays ready but warns, and a submission says its job waits for a worker', async () => {
    const s = await startStack('sqlite', 'no_worker', { adminPassword: ADMIN_PASSWORD, workers: false });
    try {
      const ready = await s.api.inject({ method: 'GET', url: '/readyz' });
      expect(ready.statusCode).toBe(200);
      expect(ready.json().warnings).toContain('no worker is serving the operations queue: jobs submitted to it wait until one starts');
      const res = await s.call({ method: 'POST', url: '/api/v1/jobs', payload: { type: 'config.create', data: { name: 'waits', subnet: '10.70.0.0/16' } } });
      expect(res.statusCode).toBe(202);
      expect(res.json().warning).toBe('no worker is serving the operations queue: the job waits until a worker starts');
    } finally {
      await s.stop();
    }
  });

  it('a submission served by a worker carries no warning', async () => {
    const s = await startStack('sqlite', 'with_worker', { adminPassword: ADMIN_PASSWORD });
    try {
      const res = await s.call({ method: 'POST', url: '/api/v1/jobs', payload: { type: 'config.create', data: { name: 'runs', subnet: '10.70.0.0/16' } } });
      expect(res.statusCode).toBe(202);
      expect(res.json()).not.toHaveProperty('warning');
      expect((await s.api.inject({ method: 'GET', url: '/readyz' })).json().warnings).toEqual([]);
    } finally {
      await s.stop();
    }
  });
});

describe('settings kept only in Redis', () => {
  it('are applied again when Redis comes back without them', async () => {
    const redis = await startOwnRedis({ aof: false });
    const s = await startStack('sqlite', 'redis_settings', {
      adminPassword: ADMIN_PASSWORD,
      env: { REDIS_URL: redis.url, REDIS_DURABILITY: 'none' },
      // A worker whose blocking connection was caught by the restart may need its forced close.
      workerOptions: { shutdownTimeoutMs: 5_000 },
    });
    try {
      const restore = s.app.queues.queue('snapshot-restore');
      expect(await restore.getGlobalConcurrency()).toBe(1);
      await redis.stop();
      await redis.start(); // empty: no AOF
      await waitFor('the global concurrency to be set again', async () => (await restore.getGlobalConcurrency().catch(() => null)) === 1, 30_000);
      expect(await s.app.queues.queue('broker-sync').getGlobalConcurrency()).toBe(1);
    } finally {
      await s.stop();
      await redis.stop();
    }
  });

  it('are checked again soon after a check failed, not only at the next period', async () => {
    const redis = await startOwnRedis({ aof: false });
    const s = await startStack('sqlite', 'redis_settings_retry', {
      adminPassword: ADMIN_PASSWORD,
      env: { REDIS_URL: redis.url, REDIS_DURABILITY: 'none' },
    });
    const admin = new Redis(redis.url);
    try {
      const restore = s.app.queues.queue('snapshot-restore');
      expect(await restore.getGlobalConcurrency()).toBe(1);
      // The setting is lost, and the check that follows the reconnect fails (the command it
      // reads with is refused), as it would against a Redis still loading its data.
      await admin.acl('SETUSER', 'default', '-hget');
      await admin.hdel(restore.keys.meta!, 'concurrency');
      await admin.client('KILL', 'TYPE', 'normal');
      await waitFor('a failed check', async () => (await admin.hget(restore.keys.meta!, 'concurrency').catch(() => 'refused')) === 'refused', 5_000);
      await new Promise((r) => setTimeout(r, 1_500));
      await admin.acl('SETUSER', 'default', '+hget');
      // The periodic check is a minute away: only a retry sets it again in time.
      await waitFor('the global concurrency to be set again', async () => (await restore.getGlobalConcurrency().catch(() => null)) === 1, 20_000);
    } finally {
      admin.disconnect();
      await s.stop();
      await redis.stop();
    }
  });
});
