/**
 * A worker process on SQLite running 100,000 node.update jobs, which a producer process
 * of its own (bench/rss-producer.ts, as the API would) keeps enqueuing; reports its RSS once
 * 10,000 and once 100,000 jobs are done. Both are taken the same way, with the worker
 * idle: paused (active jobs finish first), a forced GC (jobs-bench.ts runs this with
 * --expose-gc), then a second's wait for V8 to hand the freed pages back to the system,
 * then another GC. Taken in full flow, the figure mostly measured how much garbage the
 * last moment happened to leave, and the first one came mid-flow while the second came
 * at an idle end.
 *
 * It runs with the Node flags of package.json's `worker` script (jobs-bench.ts reads
 * them): a 16 MiB young-generation semi-space. With V8's default on this 24 GiB machine
 * (64 MiB) the young generation kept growing into its maximum for tens of thousands of
 * jobs, and the pages it gave back stayed resident in V8's page pool: RSS rose by 90 MiB
 * from 10,000 to 100,000 jobs while the heap in use stayed at 42-45 MiB.
 *
 * What still grows, and is bounded: SQLite's page cache fills up as the database grows
 * (better-sqlite3 sets cache_size to 16 MB). Heap used is reported too.
 */
import { fork } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { bootstrap } from '../src/bin/bootstrap.js';
import { startWorkers } from '../src/jobs/worker.js';
import { QUEUES } from '../src/jobs/names.js';
import { benchDatabase, directRunner, dropRedisPrefix } from './support.js';

const TOTAL = Number(process.env.BENCH_RSS_JOBS ?? 100_000);
const FIRST = TOTAL / 10;
const db = await benchDatabase('sqlite', { WORKER_CONCURRENCY: '8' });
const app = await bootstrap('bench-rss', db.config);
const run = directRunner(app);
const { id: configId } = await run('config.create', { name: 'rss', subnet: '10.90.0.0/16' });
const ids: string[] = [];
for (let i = 0; i < 20; i++) ids.push((await run('node.create', { configId, name: `n${i}`, kind: 'static' })).id);

const producerScript = fileURLToPath(new URL('./rss-producer.ts', import.meta.url));
// The server key through the environment (never argv): the producer signs each job's envelope as the API would.
const producer = fork(producerScript, [app.config.queuePrefix, QUEUES.operations, String(TOTAL), JSON.stringify(ids)], {
  execArgv: ['--import', 'tsx'],
  env: { ...process.env, BENCH_SECRET_KEY: app.config.secretKey },
});
const producerDone = new Promise<void>((resolve, reject) => producer.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`rss producer exited ${code}`)))));
const gc = (globalThis as { gc?: () => void }).gc ?? (() => undefined);
async function idleMemory(): Promise<{ rss: number; heapUsed: number }> {
  await ops.pause(); // waits for the active jobs
  gc();
  await sleep(1_000);
  gc();
  const { rss, heapUsed, heapTotal, external } = process.memoryUsage();
  const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;
  console.error(`  worker after ${done} jobs: rss ${mib(rss)}, heap total ${mib(heapTotal)}, used ${mib(heapUsed)}, external ${mib(external)}`);
  ops.resume();
  return { rss, heapUsed };
}

const pool = await startWorkers(app);
const ops = pool.workers.find((w) => w.name === QUEUES.operations)!;
let done = 0;
let first: Promise<{ rss: number; heapUsed: number }> | undefined;
await new Promise<void>((resolve) => {
  ops.on('completed', () => {
    done++;
    if (done === FIRST) first = idleMemory();
    if (done === TOTAL) resolve();
  });
});
await producerDone;
const at10k = await first!;
const at100k = await idleMemory();
await pool.close();
await app.close();
await dropRedisPrefix(app.config.queuePrefix);
await db.drop();
process.send!({ at10k, at100k });
process.exit(0);
