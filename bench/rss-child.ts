/**
 * A worker process on SQLite running 100,000 node.update jobs; reports its RSS (after a
 * forced GC) once 10,000 and once 100,000 jobs are done. Run by jobs-bench.ts with
 * --expose-gc so that garbage awaiting collection does not count as growth.
 */
import { randomUUID } from 'node:crypto';
import { bootstrap } from '../src/bootstrap.js';
import { startWorkers } from '../src/workers/worker.js';
import { QUEUES } from '../src/workers/queues.js';
import { benchDatabase, directRunner, dropRedisPrefix } from './support.js';

const TOTAL = Number(process.env.BENCH_RSS_JOBS ?? 100_000);
const FIRST = TOTAL / 10;
const db = await benchDatabase('sqlite', { WORKER_CONCURRENCY: '8' });
const app = await bootstrap('bench-rss', db.config);
const run = directRunner(app);
const { id: configId } = await run('config.create', { name: 'rss', subnet: '10.90.0.0/16' });
const ids: string[] = [];
for (let i = 0; i < 20; i++) ids.push((await run('node.create', { configId, name: `n${i}`, kind: 'static' })).id);

const queue = app.queues.queue(QUEUES.operations);
let enqueued = 0;
/** Keeps the queue topped up in chunks rather than holding 100k jobs in Redis at once. */
async function topUp(): Promise<void> {
  while (enqueued < TOTAL && (await queue.getWaitingCount()) < 5_000) {
    const chunk = Array.from({ length: Math.min(1_000, TOTAL - enqueued) }, (_, k) => ({
      name: 'node.update',
      data: { actor: 'bench', payload: { id: ids[(enqueued + k) % ids.length], listenPort: 1024 + ((enqueued + k) % 60_000) } },
      opts: { jobId: randomUUID() },
    }));
    await queue.addBulk(chunk);
    enqueued += chunk.length;
  }
}
const rssNow = () => {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().rss;
};

await topUp();
const pool = await startWorkers(app);
const ops = pool.workers.find((w) => w.name === QUEUES.operations)!;
let done = 0;
let rss10k = 0;
const timer = setInterval(() => void topUp(), 200);
await new Promise<void>((resolve) => {
  ops.on('completed', () => {
    done++;
    if (done === FIRST) rss10k = rssNow();
    if (done === TOTAL) resolve();
  });
});
clearInterval(timer);
const rss100k = rssNow();
await pool.close();
await dropRedisPrefix(app.config.queuePrefix);
await app.close();
await db.drop();
process.send!({ rss10k, rss100k });
process.exit(0);
