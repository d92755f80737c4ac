/**
 * The producer for bench/rss-child.ts, in a process of its own as the API would be: keeps
 * the worker's queue topped up with node.update jobs in chunks (rather than holding all
 * of them in Redis at once) until `total` have been added.
 *   argv: queue prefix, queue name, total, JSON array of node ids
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue } from 'bullmq';
import { redisConnection } from '../src/jobs/redis.js';
import { envelopeKey, signEnvelope } from '../src/jobs/envelope.js';
import { parseServerKey } from '../src/crypto.js';
import { REDIS_URL } from './support.js';

const [prefix, name, totalArg, idsJson] = process.argv.slice(2);
const ids = JSON.parse(idsJson!) as string[];
const total = Number(totalArg);
// Workers refuse an unsigned envelope; the parent hands the server key over in the environment.
const key = envelopeKey(parseServerKey(process.env.BENCH_SECRET_KEY!));
const connection = redisConnection(REDIS_URL);
const queue = new Queue(name!, { connection, prefix });
let enqueued = 0;
while (enqueued < total) {
  if ((await queue.getWaitingCount()) >= 5_000) {
    await sleep(100);
    continue;
  }
  const chunk = Array.from({ length: Math.min(1_000, total - enqueued) }, (_, k) => ({
    name: 'node.update',
    data: signEnvelope(key, 'node.update', 'bench', { id: ids[(enqueued + k) % ids.length], listenPort: 1024 + ((enqueued + k) % 60_000) }),
    opts: { jobId: randomUUID() },
  }));
  await queue.addBulk(chunk);
  enqueued += chunk.length;
}
await queue.close();
await connection.quit();
