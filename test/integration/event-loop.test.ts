/**
 * `npm start` runs its jobs where they cannot starve HTTP: while a heavy mesh.generate
 * runs in the same process (src/bin/both.ts, its workers in a worker thread), /healthz
 * keeps answering. On SQLite the job's INSERT ... SELECT runs synchronously inside
 * better-sqlite3 for a second or more, so on the API's own event loop it would hold every
 * request for that long; the bound here is loose (the benchmark's is tight).
 *
 * And a write transaction that waits for another connection's SQLite write lock waits
 * asynchronously: the loop keeps running meanwhile (SQLite only: PostgreSQL's driver
 * never waits on the loop).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import Database from 'better-sqlite3';
import { resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bootstrap, type AppContext } from '../../src/bin/bootstrap.js';
import { createTestDatabase, DIALECTS, type TestDatabase } from '../support/db.js';
import { freePort, waitFor } from '../support/processes.js';
import { closeAppAndDatabase } from '../support/stack.js';

const root = resolve(import.meta.dirname, '../..');
/**
 * On SQLite enough nodes that the job's one statement takes well over the bound; on
 * PostgreSQL the statement runs in the server whatever the thread, so fewer suffice.
 */
const NODES = { sqlite: 600, postgresql: 300 } as const;
const MAX_HEALTHZ_MS = 1_000;

const children = new Set<ChildProcess>();
afterAll(async () => {
  await Promise.all(
    [...children].map(
      (c) =>
        new Promise<void>((done) => {
          if (c.exitCode !== null || c.signalCode !== null) return done();
          c.once('exit', () => done());
          c.kill('SIGKILL');
        }),
    ),
  );
});


/** One GET /healthz: its latency in ms, or Infinity when it fails. */
async function probe(url: string): Promise<number> {
  const started = performance.now();
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(30_000) });
    await res.arrayBuffer();
    return res.ok ? performance.now() - started : Infinity;
  } catch {
    return Infinity;
  }
}

describe.each(DIALECTS)('npm start on %s', (dialect) => {
  let db: TestDatabase;
  let app: AppContext;

  afterAll(() => closeAppAndDatabase(app, db));

  const nodes = NODES[dialect];
  const pairs = (nodes * (nodes - 1)) / 2;

  it(`answers /healthz within ${MAX_HEALTHZ_MS} ms while mesh.generate links ${nodes} nodes in the same process, and stops with exit 0`, async () => {
    db = await createTestDatabase(dialect, 'eventloop');
    app = await bootstrap('test', db.config());
    const port = await freePort();
    const proc = spawn(process.execPath, ['--import', 'tsx', 'src/bin/both.ts'], {
      cwd: root,
      env: { ...process.env, ...db.env, QUEUE_PREFIX: app.config.queuePrefix, HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(proc);
    let output = '';
    proc.stdout!.on('data', (d) => (output += d));
    proc.stderr!.on('data', (d) => (output += d));
    const exited = new Promise<number | null>((done) => proc.on('exit', (code) => done(code)));
    const healthz = `http://127.0.0.1:${port}/healthz`;
    await waitFor('the API to answer', async () => proc.exitCode === null && (await probe(healthz)) < Infinity, 60_000).catch((err: Error) => {
      throw new Error(`${err.message}; the process said:\n${output}`);
    });

    // Found again once completed: a job read just before it completed has no result yet.
    const completed = async (id: string) => {
      const job = await app.queues.find(id);
      return job && (await app.queues.view(job)).state === 'completed' ? app.queues.find(id) : undefined;
    };
    const config = await app.queues.submit('config.create', { name: 'loop', subnet: '10.70.0.0/16' }, { actor: 'admin' });
    const configId = ((await waitFor('config.create', () => completed(config.id!), 60_000)).returnvalue as { id: string }).id;
    let last = config;
    for (let i = 0; i < nodes; i++) last = await app.queues.submit('node.create', { configId, name: `n${i}`, kind: 'static' }, { actor: 'admin' });
    await waitFor('the nodes', () => completed(last.id!), 120_000);

    const latencies: { at: number; ms: number }[] = [];
    const mesh = await app.queues.submit('mesh.generate', { configId }, { actor: 'admin' });
    let finished: Awaited<ReturnType<typeof completed>>;
    while (!(finished = await completed(mesh.id!))) {
      const at = Date.now();
      latencies.push({ at, ms: await probe(healthz) });
      await new Promise((r) => setTimeout(r, 20));
      expect(Date.now() - at, output).toBeLessThan(120_000);
    }
    expect(finished.returnvalue).toEqual({ created: pairs });

    // Probes sent while the job ran, on the job's own clock (same machine).
    const during = latencies.filter((l) => l.at >= finished.processedOn! && l.at <= finished.finishedOn!);
    expect(during.length, `the job ran ${finished.finishedOn! - finished.processedOn!} ms`).toBeGreaterThanOrEqual(3);
    const worst = Math.max(...latencies.map((l) => l.ms));
    expect(worst, `slowest /healthz of ${latencies.length}`).toBeLessThan(MAX_HEALTHZ_MS);

    proc.kill('SIGTERM');
    expect(await exited, output).toBe(0);
  }, 300_000);
});

describe('a SQLite write transaction behind another connection\'s write lock', () => {
  let db: TestDatabase;
  let app: AppContext;

  afterAll(() => closeAppAndDatabase(app, db));

  it('waits for the lock without blocking the event loop, then commits', async () => {
    db = await createTestDatabase('sqlite', 'lockwait');
    app = await bootstrap('test', db.config());
    const other = new Database(app.config.sqlitePath!);
    try {
      other.exec('begin immediate');
      other.exec("insert into system_state (key, value, updated_at) values ('lock-holder', '{}', 0)");
      const delay = monitorEventLoopDelay({ resolution: 10 });
      delay.enable();
      const HOLD_MS = 1_500;
      setTimeout(() => other.exec('commit'), HOLD_MS);
      const started = Date.now();
      const seen = await app.uow.write(async (em) => {
        const rows = await em.execute<{ n: number }[]>("select count(*) as n from system_state where key = 'lock-holder'");
        return rows[0]!.n;
      });
      const waited = Date.now() - started;
      delay.disable();

      expect(waited, 'the transaction waited for the other connection to commit').toBeGreaterThanOrEqual(HOLD_MS - 100);
      expect(seen, 'and then saw its row').toBe(1);
      expect(delay.max / 1e6, 'longest event-loop stall, ms').toBeLessThan(250);
    } finally {
      other.close();
    }
  });
});
