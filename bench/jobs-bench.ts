/**
 * Job system benchmark (issue 3). Every meshq figure is printed next to a baseline
 * measured in the same run on the same machine:
 *   - BullMQ with a no-op processor (the queue's own ceiling),
 *   - BullMQ with a hand-written `pg` transaction doing node.update's work
 *     (update one row, insert one audit row),
 *   - meshq's node.update job on PostgreSQL and on SQLite,
 *   - graphile-worker running the same transaction, at worker concurrency 8 and 50
 *     (bench/graphile-bench.ts), against meshq at the same concurrency,
 *   - HTTP submission rate of POST /api/v1/jobs against BullMQ's own `add` rate,
 *   - worker RSS after 100,000 jobs against its RSS after 10,000 (bench/rss-child.ts).
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import { Queue, Worker, type Processor } from 'bullmq';
import pg from 'pg';
import { bootstrap, type AppContext } from '../src/bin/bootstrap.js';
import { startWorkers } from '../src/jobs/worker.js';
import { redisConnection } from '../src/jobs/redis.js';
import { QUEUES } from '../src/jobs/names.js';
import { graphilePeer, handWrittenNodeUpdate } from './graphile-bench.js';
import { benchDatabase, deployedArgs, directRunner, dropRedisPrefix, record, REDIS_URL, seconds } from './support.js';

const N = Number(process.env.BENCH_JOBS ?? 5_000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 8);
const NODES = 50;
const WARM_UP_JOBS = Number(process.env.BENCH_WARM_UP_JOBS ?? 1_000);
/** The second worker concurrency meshq and graphile-worker are compared at. */
const PEER_HIGH_CONCURRENCY = 50;

/**
 * Times how long a worker takes to finish the n jobs waiting in `queue`. The queue is
 * paused while the worker starts, so start-up (BullMQ connections, meshq's four queue
 * workers) is timed for neither meshq nor the baselines.
 */
async function timedDrain(queue: Queue, n: number, start: () => Promise<{ worker: Worker; close(): Promise<void> }>): Promise<number> {
  await queue.pause();
  const { worker, close } = await start();
  let done = 0;
  const finished = new Promise<void>((resolve) => {
    worker.on('completed', () => {
      if (++done === n) resolve();
    });
    worker.on('failed', (_j, err) => console.error('bench job failed', err.message));
  });
  const t0 = process.hrtime.bigint();
  await queue.resume();
  await finished;
  const rate = n / seconds(t0);
  await close();
  return rate;
}

/** Enqueues n jobs, then times one plain BullMQ worker running `processor` on them. */
async function drainRate(prefix: string, processor: Processor, n: number, makeData: (i: number) => unknown): Promise<number> {
  const queueConnection = redisConnection(REDIS_URL);
  const queue = new Queue('bench', { connection: queueConnection, prefix });
  await fillQueue(queue, 'noop', n, makeData);
  const connection = redisConnection(REDIS_URL);
  const rate = await timedDrain(queue, n, async () => {
    const worker = new Worker('bench', processor, { connection, prefix, concurrency: CONCURRENCY });
    await worker.waitUntilReady();
    return { worker, close: () => worker.close() };
  });
  await connection.quit();
  await queue.close();
  await queueConnection.quit();
  await dropRedisPrefix(prefix);
  return rate;
}

async function fillQueue(queue: Queue, name: string, n: number, makeData: (i: number) => unknown): Promise<void> {
  for (let i = 0; i < n; i += 1000) {
    const chunk = Array.from({ length: Math.min(1000, n - i) }, (_, k) => ({
      name,
      data: makeData(i + k),
      opts: { jobId: randomUUID(), removeOnComplete: { count: 1000 }, removeOnFail: { count: 1000 } },
    }));
    await queue.addBulk(chunk);
  }
}

/** A config with NODES nodes, created through the real runner. */
export async function seed(app: AppContext): Promise<string[]> {
  const run = directRunner(app);
  const { id: configId } = await run('config.create', { name: `bench-${randomUUID().slice(0, 8)}`, subnet: '10.80.0.0/16' });
  const ids: string[] = [];
  for (let i = 0; i < NODES; i++) ids.push((await run('node.create', { configId, name: `n${i}`, kind: 'static' })).id);
  return ids;
}

const nodeUpdatePayload = (ids: string[], i: number) => ({ id: ids[i % ids.length]!, listenPort: 1024 + (i % 60_000) });
/** Signed as the API signs them: workers refuse an envelope they cannot verify. */
const nodeUpdate = (app: AppContext, ids: string[]) => (i: number) => app.queues.signedEnvelope('node.update', 'bench', nodeUpdatePayload(ids, i));

export async function meshqNodeUpdateRate(app: AppContext, ids: string[], n: number): Promise<number> {
  const queue = app.queues.queue(QUEUES.operations);
  await fillQueue(queue, 'node.update', n, nodeUpdate(app, ids));
  return timedDrain(queue, n, async () => {
    const pool = await startWorkers(app);
    return { worker: pool.workers.find((w) => w.name === QUEUES.operations)!, close: () => pool.close() };
  });
}

export async function pgBaselineRate(url: string, ids: string[], n: number): Promise<number> {
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  const rate = await drainRate(`bench-pg-${randomUUID().slice(0, 8)}`, async (job) => {
    const { id, listenPort } = (job.data as { payload: { id: string; listenPort: number } }).payload;
    await handWrittenNodeUpdate(pool, id, listenPort);
    return { id };
  }, n, (i) => ({ actor: 'bench', payload: nodeUpdatePayload(ids, i) }));
  await pool.end();
  return rate;
}

/** BullMQ's own `add` rate with the same number of requests in flight as the HTTP load. */
async function bullmqAddRate(prefix: string, connections: number, durationS: number): Promise<number> {
  const connection = redisConnection(REDIS_URL);
  const queue = new Queue('bench-add', { connection, prefix });
  let count = 0;
  const deadline = Date.now() + durationS * 1000;
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (Date.now() < deadline) {
        await queue.add('node.update', { actor: 'bench', payload: { id: randomUUID(), listenPort: 1 } }, { jobId: randomUUID() });
        count++;
      }
    }),
  );
  await queue.close();
  await connection.quit();
  await dropRedisPrefix(prefix);
  return count / durationS;
}

export async function httpSubmitRate(app: AppContext, ids: string[], connections: number, durationS: number): Promise<number> {
  const { buildApi } = await import('../src/api/app.js');
  const api = await buildApi(app);
  await api.listen({ host: '127.0.0.1', port: 0 });
  const address = api.server.address() as { port: number };
  const script = fileURLToPath(new URL('./http-load-child.ts', import.meta.url));
  const child = fork(script, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const result = await new Promise<{ ok: number; non2xx: number }>((resolve, reject) => {
    child.once('message', (m) => resolve(m as { ok: number; non2xx: number }));
    child.once('exit', (code) => reject(new Error(`load generator exited ${code}`)));
    child.send({
      url: `http://127.0.0.1:${address.port}/api/v1/jobs`,
      authorization: 'Basic ' + Buffer.from(`admin:${BENCH_ADMIN_PASSWORD}`).toString('base64'),
      ids,
      connections,
      durationS,
    });
  });
  await api.close();
  if (result.non2xx > 0) console.error(`  (${result.non2xx} non-2xx responses)`);
  return result.ok / durationS;
}

export const BENCH_ADMIN_PASSWORD = 'bench-admin-password';

interface IdleMemory {
  rss: number;
  heapUsed: number;
}

/** The Node flags package.json's `worker` script starts a worker with (its young generation size). */
const workerNodeFlags = (): string[] => deployedArgs('worker').filter((arg) => arg.startsWith('--'));

async function rssChild(): Promise<{ at10k: IdleMemory; at100k: IdleMemory }> {
  const script = fileURLToPath(new URL('./rss-child.ts', import.meta.url));
  const execArgv = ['--import', 'tsx', '--expose-gc', ...workerNodeFlags()];
  console.error(`  worker RSS child: node ${execArgv.join(' ')}`);
  return new Promise((resolve, reject) => {
    const child = fork(script, [], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.on('message', (m) => resolve(m as { at10k: IdleMemory; at100k: IdleMemory }));
    child.on('exit', (code) => (code === 0 ? undefined : reject(new Error(`rss child exited ${code}`))));
  });
}

const REPEATS = Number(process.env.BENCH_REPEATS ?? 3);

/**
 * Runs every measurement REPEATS times, in turns (a b c, a b c, …), and keeps each one's
 * median. This machine's speed drifts from second to second; taking turns gives a
 * figure and its baseline the same conditions, and the median drops the odd stall.
 */
async function interleavedMedians<const M extends readonly (() => Promise<number>)[]>(measures: M): Promise<{ -readonly [K in keyof M]: number }> {
  const runs: number[][] = measures.map(() => []);
  for (let r = 0; r < REPEATS; r++) {
    for (const [i, measure] of measures.entries()) runs[i]!.push(await measure());
  }
  console.error(`  (runs: ${runs.map((values) => values.map((v) => Math.round(v)).join(' ')).join(' | ')})`);
  return runs.map((values) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)]!) as { -readonly [K in keyof M]: number };
}

export async function benchJobs(): Promise<void> {
  console.error(`job system: ${N} jobs per run, worker concurrency ${CONCURRENCY}, medians of ${REPEATS} interleaved runs after a ${WARM_UP_JOBS}-job warm-up`);
  const noop = await drainRate(`bench-noop-${randomUUID().slice(0, 8)}`, async () => ({ ok: true }), N, (i) => ({ i }));
  record({ name: 'BullMQ, no-op processor', value: noop, unit: 'jobs/s' });

  const pgDb = await benchDatabase('postgresql', { ADMIN_PASSWORD: BENCH_ADMIN_PASSWORD, WORKER_CONCURRENCY: String(CONCURRENCY) });
  const pgApp = await bootstrap('bench', pgDb.config);
  const pgIds = await seed(pgApp);
  // One short unmeasured run of each first: the first run in a process also measures the
  // JIT compiling its code, which is far more for meshq's path than for the baseline's.
  // The same app at the peer's higher concurrency (its own workers; same database).
  const pgApp50 = await bootstrap('bench', { ...pgDb.config, workerConcurrency: PEER_HIGH_CONCURRENCY });
  const graphile = await graphilePeer(seed);
  await pgBaselineRate(pgDb.config.databaseUrl, pgIds, WARM_UP_JOBS);
  await meshqNodeUpdateRate(pgApp, pgIds, WARM_UP_JOBS);
  await meshqNodeUpdateRate(pgApp50, pgIds, WARM_UP_JOBS);
  await graphile.rate(WARM_UP_JOBS, CONCURRENCY);
  const [baseline, meshqPg, graphileLow, meshqPg50, graphileHigh] = await interleavedMedians([
    () => pgBaselineRate(pgDb.config.databaseUrl, pgIds, N),
    () => meshqNodeUpdateRate(pgApp, pgIds, N),
    () => graphile.rate(N, CONCURRENCY),
    () => meshqNodeUpdateRate(pgApp50, pgIds, N),
    () => graphile.rate(N, PEER_HIGH_CONCURRENCY),
  ]);
  record({ name: 'BullMQ + hand-written pg transaction', value: baseline, unit: 'jobs/s', baseline: 'no-op', ratio: baseline / noop });
  record({ name: 'meshq node.update, PostgreSQL', value: meshqPg, unit: 'jobs/s', baseline: 'hand-written pg', ratio: meshqPg / baseline, target: '>= 0.9' });
  record({ name: `graphile-worker, same transaction, concurrency ${CONCURRENCY}`, value: graphileLow, unit: 'jobs/s' });
  record({ name: `meshq node.update, PostgreSQL, concurrency ${CONCURRENCY}`, value: meshqPg, unit: 'jobs/s', baseline: `graphile-worker at ${CONCURRENCY}`, ratio: meshqPg / graphileLow, target: '>= 1.2' });
  record({ name: `graphile-worker, same transaction, concurrency ${PEER_HIGH_CONCURRENCY}`, value: graphileHigh, unit: 'jobs/s' });
  record({ name: `meshq node.update, PostgreSQL, concurrency ${PEER_HIGH_CONCURRENCY}`, value: meshqPg50, unit: 'jobs/s', baseline: `graphile-worker at ${PEER_HIGH_CONCURRENCY}`, ratio: meshqPg50 / graphileHigh, target: '>= 1.2' });
  await graphile.close();
  await pgApp50.close();

  const connections = 16;
  const durationS = Number(process.env.BENCH_HTTP_SECONDS ?? 5);
  // "BullMQ's single add rate": one `add` call at a time (not addBulk). The rate with as
  // many calls in flight as the HTTP load has connections is printed too, for context.
  const [singleAdd, parallelAdd, submit] = await interleavedMedians([
    () => bullmqAddRate(`bench-add-${randomUUID().slice(0, 8)}`, 1, durationS),
    () => bullmqAddRate(`bench-add-${randomUUID().slice(0, 8)}`, connections, durationS),
    () => httpSubmitRate(pgApp, pgIds, connections, durationS),
  ]);
  record({ name: 'BullMQ queue.add, one at a time', value: singleAdd, unit: 'adds/s' });
  record({ name: `BullMQ queue.add, ${connections} in flight`, value: parallelAdd, unit: 'adds/s' });
  record({ name: `POST /api/v1/jobs, ${connections} connections`, value: submit, unit: 'req/s', baseline: 'single add', ratio: submit / singleAdd, target: '>= 0.5' });
  record({ name: `POST /api/v1/jobs vs ${connections} adds in flight`, value: submit, unit: 'req/s', baseline: `${connections} adds in flight`, ratio: submit / parallelAdd });
  await pgApp.close();
  await dropRedisPrefix(pgApp.config.queuePrefix);
  await pgDb.drop();

  const sqDb = await benchDatabase('sqlite', { WORKER_CONCURRENCY: String(CONCURRENCY) });
  const sqApp = await bootstrap('bench', sqDb.config);
  const sqIds = await seed(sqApp);
  await meshqNodeUpdateRate(sqApp, sqIds, WARM_UP_JOBS);
  const meshqSqlite = await meshqNodeUpdateRate(sqApp, sqIds, N);
  record({ name: 'meshq node.update, SQLite', value: meshqSqlite, unit: 'jobs/s', baseline: 'no-op', ratio: meshqSqlite / noop, target: '>= 2,000 jobs/s' });
  await sqApp.close();
  await dropRedisPrefix(sqApp.config.queuePrefix);
  await sqDb.drop();

  if (process.env.BENCH_SKIP_RSS !== '1') {
    const { at10k, at100k } = await rssChild();
    const mib = 2 ** 20;
    record({ name: 'worker heap used after 10,000 jobs', value: at10k.heapUsed / mib, unit: 'MiB' });
    record({ name: 'worker heap used after 100,000 jobs', value: at100k.heapUsed / mib, unit: 'MiB', baseline: 'after 10,000', ratio: at100k.heapUsed / at10k.heapUsed });
    record({ name: 'worker RSS after 10,000 jobs', value: at10k.rss / mib, unit: 'MiB' });
    record({ name: 'worker RSS after 100,000 jobs', value: at100k.rss / mib, unit: 'MiB', baseline: 'after 10,000', ratio: at100k.rss / at10k.rss, target: '<= 1.2' });
  }
}
