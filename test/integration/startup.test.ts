/**
 * Start-up and shutdown of real processes: configuration errors, an unreachable
 * PostgreSQL (bounded retries, a message without the password), and a graceful SIGTERM
 * that lets an active job finish.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { bootstrap } from '../../src/bin/bootstrap.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { configWithNodes, expectOperationsIdle, heldMeshGenerate } from '../support/long-job.js';
import { freePort, killAll, runEntry, startWorkerProcess } from '../support/processes.js';
import { deletePrefix } from '../support/redis.js';

describe('start-up', () => {
  it('a bad environment stops start-up with one message naming every bad variable', async () => {
    const r = await runEntry('src/bin/migrate.ts', {
      DATABASE_URL: 'mysql://nope',
      PORT: 'eighty',
      WORKER_CONCURRENCY: '0',
      MQTT_ENABLED: 'maybe',
    });
    expect(r.code).toBe(1);
    for (const name of ['DATABASE_URL', 'PORT', 'WORKER_CONCURRENCY', 'MQTT_ENABLED']) expect(r.out).toContain(name);
    expect(r.out.match(/invalid configuration/g)).toHaveLength(1);
  });

  it('an unreachable PostgreSQL is retried within DB_CONNECT_TIMEOUT_MS, then fails naming the URL without its password', async () => {
    const port = await freePort();
    const password = 'sup3r-s3cret-pw';
    const r = await runEntry('src/bin/migrate.ts', {
      DATABASE_URL: `postgres://meshq:${password}@127.0.0.1:${port}/meshq`,
      SECRET_KEY: 'c'.repeat(64),
      DB_CONNECT_TIMEOUT_MS: '2000',
      LOG_LEVEL: 'info',
    });
    expect(r.code).toBe(1);
    expect(r.ms).toBeGreaterThanOrEqual(1_500); // it did retry
    expect(r.ms).toBeLessThan(20_000); // and gave up within a bounded time
    expect(r.out).toContain(`postgres://meshq:***@127.0.0.1:${port}/meshq`);
    expect(r.out).toMatch(/did not accept connections within \d+ ms/);
    expect(r.out).toMatch(/retrying/); // the retries were logged
    expect(r.out).not.toContain(password);
  });

  it('an unreachable Redis stops start-up with a clear message', async () => {
    const db = await createTestDatabase('sqlite', 'noredis');
    try {
      const port = await freePort();
      const r = await runEntry('src/bin/worker.ts', { ...db.env, REDIS_URL: `redis://127.0.0.1:${port}` });
      expect(r.code).toBe(1);
      expect(r.out).toContain(`Redis at redis://127.0.0.1:${port}`);
      expect(r.out).toContain('is not reachable');
    } finally {
      await db.drop();
    }
  });
});

describe('graceful shutdown', () => {
  let db: TestDatabase;

  afterAll(async () => {
    await killAll();
    await db?.drop();
  });

  it('SIGTERM lets the active job finish, leaves nothing stalled, and exits 0', async () => {
    db = await createTestDatabase('postgresql', 'shutdown');
    const app = await bootstrap('test', db.config());
    try {
      const prefix = app.config.queuePrefix;
      const worker = await startWorkerProcess({ ...db.env, TEST_QUEUE_PREFIX: prefix });
      const configId = await configWithNodes(app, '10.60.0.0/16', 150);
      // The job must still be running when the signal arrives, however fast it is: it
      // waits for the data lock until the signal has been sent.
      const { job: mesh, release } = await heldMeshGenerate(app, configId, 20);

      worker.proc.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 300));
      await release();
      expect(await worker.exited).toBe(0);
      const view = await app.queues.view((await app.queues.find(mesh.id!))!);
      expect(view.state).toBe('completed');
      expect(view.result).toEqual({ created: 11_175 });
      await expectOperationsIdle(app);
      await deletePrefix(prefix);
    } finally {
      await app.close();
    }
  });
});
