/**
 * Start-up and shutdown of real processes: configuration errors, an unreachable
 * PostgreSQL (bounded retries, a message without the password), and a graceful SIGTERM
 * that lets an active job finish.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { bootstrap } from '../../src/bin/bootstrap.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { killAll, startWorkerProcess, waitFor } from '../support/processes.js';
import { deletePrefix } from '../support/redis.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

function runEntry(entry: string, env: Record<string, string>, timeoutMs = 30_000): Promise<{ code: number | null; out: string; ms: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, ['--import', 'tsx', entry], {
      cwd: root,
      env: { PATH: process.env.PATH!, HOME: process.env.HOME!, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, ms: Date.now() - started });
    });
  });
}

/** A port nothing listens on: bind one, note it, close it. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as { port: number };
  await new Promise((r) => srv.close(r));
  return port;
}

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
    const port = await closedPort();
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
      const port = await closedPort();
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
      const config = await app.queues.submit('config.create', { name: 'big', subnet: '10.60.0.0/16' }, { actor: 'admin' });
      await waitFor('config', async () => (await app.queues.view((await app.queues.find(config.id!))!)).state === 'completed');
      const configId = ((await app.queues.find(config.id!))!.returnvalue as { id: string }).id;
      let last = config;
      for (let i = 0; i < 150; i++) last = await app.queues.submit('node.create', { configId, name: `n${i}`, kind: 'static' }, { actor: 'admin' });
      await waitFor('the nodes', async () => (await app.queues.view((await app.queues.find(last.id!))!)).state === 'completed', 60_000);

      // The job must still be running when the signal arrives, however fast it is: an
      // exclusive write transaction here (what a restore holds) keeps it waiting for the
      // data lock until the signal has been sent.
      let release!: () => void;
      const released = new Promise<void>((r) => (release = r));
      const holding = app.uow.write(() => released, { exclusive: true });
      const mesh = await app.queues.submit('mesh.generate', { configId }, { actor: 'admin' });
      await waitFor('mesh.generate to be active', async () => (await app.queues.view((await app.queues.find(mesh.id!))!)).state === 'active', 60_000, 20);

      worker.proc.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 300));
      release();
      await holding;
      expect(await worker.exited).toBe(0);
      const view = await app.queues.view((await app.queues.find(mesh.id!))!);
      expect(view.state).toBe('completed');
      expect(view.result).toEqual({ created: 11_175 });
      const counts = await app.queues.queue('operations').getJobCounts('active', 'waiting');
      expect(counts).toEqual({ active: 0, waiting: 0 });
      // Delayed jobs may only be the workers' own schedules (retention), never this work.
      const delayed = await app.queues.queue('operations').getJobs(['delayed']);
      expect(delayed.map((j) => j.name).filter((n) => n !== 'retention.prune')).toEqual([]);
      await deletePrefix(prefix);
    } finally {
      await app.close();
    }
  });
});
