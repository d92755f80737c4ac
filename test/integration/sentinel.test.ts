/**
 * Redis Sentinel failover while jobs run. The test starts its own Redis primary and
 * replica (AOF, `appendfsync always`, `min-replicas-to-write 1`) and three sentinels,
 * points a meshq at the sentinels (the API with in-process workers, and a worker in a
 * process of its own), submits a stream of `config.create` jobs with idempotency keys
 * from several clients, and fails the primary over in the middle of it, first with
 * SENTINEL FAILOVER and then by killing the new primary's process (restarted from its AOF,
 * it rejoins as a replica). A client retries a 503 with the same key, as the API asks.
 * The API answers 202 only once the replica holds the job (REDIS_WAIT_REPLICAS, 1 by
 * default with Sentinel), so the killed primary takes no accepted job with it.
 *
 * Then: every accepted job completed; each key has exactly one effect (one config, one
 * ledger row, one audit row); the API, the in-process workers and the worker process
 * followed the new primary without a restart (after each failover, new submissions are
 * accepted and run, and each kind of worker runs jobs alone).
 */
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { AuditRecord } from '../../src/domain/entities/audit.js';
import { MeshConfig } from '../../src/domain/entities/mesh.js';
import { JobRecord } from '../../src/domain/entities/system.js';
import { DIALECTS } from '../support/db.js';
import { stopOwnServices } from '../support/own-services.js';
import { killAll, startWorkerProcess, waitFor, type Child } from '../support/processes.js';
import { startOwnSentinelGroup, type OwnSentinelGroup } from '../support/sentinels.js';
import { memorySink, startStack, type Stack } from '../support/stack.js';

const PASSWORD = 'sentinel-admin-pw';
const LANES = 4;
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

afterAll(async () => {
  await killAll();
  await stopOwnServices();
});

describe.each(DIALECTS)('Redis Sentinel failover on %s', (dialect) => {
  let group: OwnSentinelGroup;
  let stack: Stack;
  let child: Child;
  const logs: string[] = [];
  /** Every accepted submission: key index -> job id. */
  const accepted = new Map<number, string>();
  let retried503 = 0;
  let next = 0;

  beforeAll(async () => {
    group = await startOwnSentinelGroup();
    const env = {
      ...group.env,
      // The group persists with AOF: meshq checks it through the sentinels' primary.
      REDIS_DURABILITY: 'aof',
      LOG_LEVEL: 'warn',
    };
    stack = await startStack(dialect, 'sentinel', {
      adminPassword: PASSWORD,
      env,
      logDestination: memorySink((t) => logs.push(t)),
      // Short locks: a job whose completion a failover cut off is taken over within the test.
      workerOptions: { stalledIntervalMs: 1_000, lockDurationMs: 2_000 },
    });
    child = await startWorkerProcess({ ...stack.db.env, ...env, TEST_QUEUE_PREFIX: stack.app.config.queuePrefix, TEST_STALLED_INTERVAL_MS: '1000' });
  }, 120_000);

  afterAll(async () => {
    await killAll();
    await stack?.stop();
    await stopOwnServices();
  }, 60_000);

  /** Submits key `i` until the API accepts it: a 503 is retried with the same key; anything else fails the test. */
  async function submit(i: number, deadlineMs = 90_000): Promise<{ id: string; tries: number }> {
    const deadline = Date.now() + deadlineMs;
    for (let tries = 1; ; tries++) {
      const res = await stack.call({
        method: 'POST',
        url: '/api/v1/jobs',
        headers: { 'idempotency-key': `failover-${i}` },
        payload: { type: 'config.create', data: { name: `failover-${i}`, subnet: `10.${Math.floor(i / 256)}.${i % 256}.0/24` } },
      });
      if (res.statusCode === 202 || res.statusCode === 200) {
        const id = res.json<{ id: string }>().id;
        accepted.set(i, id);
        return { id, tries };
      }
      if (res.statusCode !== 503) throw new Error(`submission ${i}: ${res.statusCode} ${res.body}`);
      retried503++;
      if (Date.now() > deadline) throw new Error(`submission ${i} still answered 503 after ${deadlineMs} ms: ${res.body}`);
      await pause(100);
    }
  }

  /** `count` submissions from LANES concurrent clients, each one after the other. */
  async function stream(count: number, during?: () => Promise<void>): Promise<void> {
    const end = next + count;
    const lanes = Array.from({ length: LANES }, async () => {
      while (next < end) await submit(next++);
    });
    await Promise.all([...lanes, during?.()]);
  }

  /** The key indexes' jobs, waited for until each is in the ledger (committed), then their state. */
  async function waitCommitted(indexes: number[]): Promise<void> {
    const ids = indexes.map((i) => accepted.get(i)!);
    try {
      await waitFor(`${ids.length} jobs to commit`, async () => (await stack.app.orm.em.fork().count(JobRecord, { jobId: { $in: ids } })) === ids.length, 120_000, 200);
    } catch (err) {
      // Which ones, and where Redis has them: lost (no job) or stuck (its state).
      const done = new Set((await stack.app.orm.em.fork().find(JobRecord, { jobId: { $in: ids } })).map((r) => r.jobId));
      const missing = await Promise.all(
        indexes.filter((i) => !done.has(accepted.get(i)!)).map(async (i) => {
          const job = await stack.app.queues.find(accepted.get(i)!);
          return `key ${i}: ${job ? `${await job.getState()} (attempts ${job.attemptsMade}, ${job.failedReason ?? ''})` : 'not in Redis'}`;
        }),
      );
      throw new Error(`${(err as Error).message}; not committed: ${missing.join('; ')}`);
    }
  }

  const processedBy = async (i: number) => (await stack.app.queues.find(accepted.get(i)!))?.processedBy;

  /** After a failover: a submission is accepted again within a loose bound, with no restart of anything. */
  async function acceptsAgain(): Promise<void> {
    const first = next++;
    await submit(first, 60_000);
    await waitCommitted([first]);
  }

  /** Only the worker process runs jobs while the in-process workers are paused, and the other way round. */
  async function eachWorkerRuns(label: string): Promise<void> {
    await Promise.all(stack.pool!.workers.map((w) => w.pause()));
    const byChild = [next, next + 1, next + 2];
    await stream(byChild.length);
    await waitCommitted(byChild);
    for (const i of byChild) expect(await processedBy(i), `${label}: job ${i} ran in the worker process`).toMatch(new RegExp(`:${child.pid}$`));
    stack.pool!.workers.forEach((w) => w.resume());

    child.proc.kill('SIGSTOP');
    try {
      const inProcess = [next, next + 1, next + 2];
      await stream(inProcess.length);
      await waitCommitted(inProcess);
      for (const i of inProcess) expect(await processedBy(i), `${label}: job ${i} ran in the test process`).toMatch(new RegExp(`:${process.pid}$`));
    } finally {
      child.proc.kill('SIGCONT');
    }
  }

  it('loses no accepted job, runs none twice, and the API and workers follow the new primary by themselves', async () => {
    onTestFailed(() => {
      process.stderr.write(`meshq log (warn and above):\n${logs.join('').slice(-6_000)}\nworker process:\n${child?.output().slice(-4_000)}\n`);
    });

    // Before: jobs run through the sentinels' primary.
    const [first] = group.nodePorts;
    expect(await group.primaryPort()).toBe(first);
    await stream(20);
    await waitCommitted([...accepted.keys()]);

    // 1. SENTINEL FAILOVER while clients keep submitting and workers keep running.
    let switched: { from: number; to: number } | undefined;
    await stream(120, async () => {
      while (accepted.size < 40) await pause(20);
      switched = await group.failover();
    });
    expect(switched!.from).toBe(first);
    await group.settled();
    await acceptsAgain();
    await eachWorkerRuns('after SENTINEL FAILOVER');

    // 2. The new primary's process is killed while jobs run; it comes back from its AOF as a replica.
    const killed = await group.primaryPort();
    await stream(120, async () => {
      while (accepted.size < 200) await pause(20);
      await group.kill(killed);
      await waitFor('the sentinels to promote the replica', async () => (await group.primaryPort()) !== killed, 60_000, 200);
      await group.restart(killed);
    });
    // Settled on either node: on a loaded machine the sentinels may fail over once more.
    await group.settled();
    await acceptsAgain();
    await eachWorkerRuns('after the primary was killed');

    // Every accepted key committed exactly once.
    const keys = [...accepted.keys()];
    expect(keys.length).toBe(next);
    await waitCommitted(keys);
    const em = stack.app.orm.em.fork();
    const ids = [...accepted.values()];
    expect(new Set(ids).size).toBe(ids.length);
    expect(await em.count(JobRecord, { jobId: { $in: ids } })).toBe(ids.length);
    expect(await em.count(MeshConfig, { name: { $like: 'failover-%' } })).toBe(keys.length);
    expect(await em.count(AuditRecord, { action: 'config.create' })).toBe(keys.length);
    // And each one completed (a second run would have failed on its name, or been answered from the ledger).
    for (const id of ids) {
      const view = await waitFor(`job ${id} to show completed`, async () => {
        const v = await stack.get<{ state: string }>(`/api/v1/jobs/${id}`);
        return v.state === 'completed' ? v : undefined;
      }, 60_000, 200);
      expect(view.state).toBe('completed');
    }
    // The failovers were felt: some submissions were answered 503 and retried.
    process.stderr.write(`sentinel failover on ${dialect}: ${keys.length} jobs, ${retried503} submissions answered 503 and retried\n`);
  }, 600_000);
});
