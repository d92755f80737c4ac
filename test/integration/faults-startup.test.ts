/**
 * Start-up under two faults a user can make: a Redis without persistence (accepted jobs
 * would be lost with it) and two installations sharing one queue prefix on one Redis
 * (each would run the other's jobs against the wrong database). The Redis instances are
 * the test's own.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { buildApi } from '../../src/api/app.js';
import { bootstrap, type AppContext } from '../../src/bin/bootstrap.js';
import { ConfigError, loadConfig } from '../../src/config.js';
import { startWorkers, type WorkerPool } from '../../src/jobs/worker.js';
import { createTestDatabase, DIALECTS, type TestDatabase } from '../support/db.js';
import { runEntry, waitFor } from '../support/processes.js';
import { deletePrefix } from '../support/redis.js';
import { startOwnRedis, stopOwnServices } from '../support/own-services.js';
import { configNames } from '../support/stack.js';

const dbs: TestDatabase[] = [];
afterAll(async () => {
  for (const db of dbs) await db.drop();
  await stopOwnServices();
});

describe('Redis durability at start-up', () => {
  it('refuses a Redis without AOF, saying why and what to do; with REDIS_DURABILITY=none it starts and /readyz says so', async () => {
    const redis = await startOwnRedis({ aof: false });
    const db = await createTestDatabase('sqlite', 'no_aof');
    dbs.push(db);
    const refused = await runEntry('src/bin/worker.ts', { ...db.env, REDIS_URL: redis.url, REDIS_DURABILITY: 'aof' });
    expect(refused.code).toBe(1);
    expect(refused.out).toContain('REDIS_DURABILITY');
    expect(refused.out).toContain(`Redis at ${redis.url}`);
    expect(refused.out).toContain('a Redis restart may lose accepted jobs');
    expect(refused.out).toContain('REDIS_DURABILITY=none');

    const app = await bootstrap('test', db.config({ REDIS_URL: redis.url, REDIS_DURABILITY: 'none', ADMIN_PASSWORD: 'admin-password-1' }));
    const api = await buildApi(app);
    try {
      const ready = await api.inject({ method: 'GET', url: '/readyz' });
      expect(ready.statusCode).toBe(200);
      expect(ready.json().durability).toEqual({ redis: 'none', required: 'none', note: 'a Redis restart may lose accepted jobs' });
      // No worker anywhere: ready, but it says so.
      expect(ready.json().warnings).toContain('no worker is serving the operations queue: jobs submitted to it wait until one starts');
    } finally {
      await api.close();
      await app.close();
    }
  });

  it('with AOF on, starts and reports it', async () => {
    const redis = await startOwnRedis({ aof: true });
    const db = await createTestDatabase('sqlite', 'aof');
    dbs.push(db);
    const app = await bootstrap('test', db.config({ REDIS_URL: redis.url, REDIS_DURABILITY: 'aof', ADMIN_PASSWORD: 'admin-password-1' }));
    const api = await buildApi(app);
    try {
      const ready = await api.inject({ method: 'GET', url: '/readyz' });
      expect(ready.json().durability).toEqual({ redis: 'aof', required: 'aof' });
    } finally {
      await api.close();
      await app.close();
    }
  });

  it('reads persistence with INFO when CONFIG is denied, and says clearly when the Redis user may not run INFO', async () => {
    const redis = await startOwnRedis({ aof: true });
    const admin = new Redis(redis.url);
    await admin.call('ACL', 'SETUSER', 'noconfig', 'on', '>meshq-pw-1', '~*', '&*', '+@all', '-config');
    await admin.call('ACL', 'SETUSER', 'noinfo', 'on', '>meshq-pw-1', '~*', '&*', '+@all', '-info', '-config');
    admin.disconnect();
    const db = await createTestDatabase('sqlite', 'acl');
    dbs.push(db);
    const app = await bootstrap('test', db.config({ REDIS_URL: `redis://noconfig:meshq-pw-1@127.0.0.1:${redis.port}`, REDIS_DURABILITY: 'aof' }));
    await app.close();
    const refused = await bootstrap('test', db.config({ REDIS_URL: `redis://noinfo:meshq-pw-1@127.0.0.1:${redis.port}`, REDIS_DURABILITY: 'aof' })).then(
      (a) => a.close().then(() => undefined),
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(ConfigError);
    expect((refused as Error).message).toMatch(/REDIS_URL: the Redis user of redis:\/\/noinfo:\*\*\*@127\.0\.0\.1:\d+\/? may not run a command meshq needs \(NOPERM.*'info'.*\+info/s);
    expect((refused as Error).message).not.toContain('meshq-pw-1');
  });
});

describe.each(DIALECTS)('queue prefix ownership (%s)', (dialect) => {
  it('a second installation (another database) with the same prefix refuses to start, naming the prefix and both databases', async () => {
    const a = await createTestDatabase(dialect, 'owner_a');
    const b = await createTestDatabase(dialect, 'owner_b');
    dbs.push(a, b);
    const prefix = `meshq-test-owner-${randomBytes(4).toString('hex')}`;
    const first = await bootstrap('test', loadConfig(a.env, { queuePrefix: prefix }));
    try {
      // Another process of the same installation is welcome.
      const sibling = await bootstrap('test', loadConfig(a.env, { queuePrefix: prefix }));
      await sibling.close();
      const err = await bootstrap('test', loadConfig(b.env, { queuePrefix: prefix })).then(
        (app) => app.close().then(() => undefined),
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ConfigError);
      const message = (err as Error).message;
      expect(message).toContain(`the prefix "${prefix}"`);
      expect(message).toContain(a.url.replace(/^sqlite:/, 'sqlite:'));
      expect(message).toContain(b.url);
      expect(message).toContain(`${prefix}:meshq:owner`);
    } finally {
      await first.close();
      await deletePrefix(prefix);
    }
  });

  it('two installations with different prefixes on one Redis each run only their own jobs', async () => {
    const a = await createTestDatabase(dialect, 'iso_a');
    const b = await createTestDatabase(dialect, 'iso_b');
    dbs.push(a, b);
    const started: { app: AppContext; pool: WorkerPool }[] = [];
    try {
      for (const db of [a, b]) {
        const app = await bootstrap('test', db.config());
        started.push({ app, pool: await startWorkers(app) });
      }
      const [one, two] = started as [(typeof started)[0], (typeof started)[0]];
      const jobA = await one.app.queues.submit('config.create', { name: 'only-in-a', subnet: '10.71.0.0/16' }, { actor: 'admin' });
      const jobB = await two.app.queues.submit('config.create', { name: 'only-in-b', subnet: '10.72.0.0/16' }, { actor: 'admin' });
      const done = (app: AppContext, id: string) =>
        waitFor(`job ${id} to complete`, async () => {
          const job = await app.queues.find(id);
          return job && (await app.queues.view(job)).state === 'completed';
        }, 20_000);
      await done(one.app, jobA.id!);
      await done(two.app, jobB.id!);
      expect(await configNames(one.app)).toEqual(['only-in-a']);
      expect(await configNames(two.app)).toEqual(['only-in-b']);
      expect(await one.app.queues.find(jobB.id!)).toBeUndefined();
      expect(await two.app.queues.find(jobA.id!)).toBeUndefined();
    } finally {
      for (const { app, pool } of started) {
        await pool.close();
        await deletePrefix(app.config.queuePrefix);
        await app.close();
      }
    }
  });
});
