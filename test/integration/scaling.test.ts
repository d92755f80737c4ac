/**
 * Horizontal scaling with real processes: three worker processes share the queues;
 * 600 mixed operations submitted through the API all complete, every process runs some,
 * and audit rows equal operations. Then one worker is killed with SIGKILL mid-burst:
 * its active jobs are taken over after the stall interval, and still nothing is
 * applied twice.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { bootstrap, type AppContext } from '../../src/bin/bootstrap.js';
import { buildApi } from '../../src/api/app.js';
import { AuditRecord } from '../../src/domain/entities/audit.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { killAll, startWorkerProcess, waitFor, type Child } from '../support/processes.js';
import { deletePrefix } from '../support/redis.js';

const ADMIN_PASSWORD = 'scaling-admin-pw';
const auth = { authorization: 'Basic ' + Buffer.from(`admin:${ADMIN_PASSWORD}`).toString('base64') };
const STALLED_MS = 1_000;

describe('horizontal scaling on postgresql', () => {
  let db: TestDatabase;
  let app: AppContext;
  let api: FastifyInstance;
  let workers: Child[] = [];
  let childEnv: Record<string, string>;

  beforeAll(async () => {
    db = await createTestDatabase('postgresql', 'scaling');
    const config = db.config({ ADMIN_PASSWORD, WORKER_CONCURRENCY: '4' });
    app = await bootstrap('test-api', config);
    api = await buildApi(app);
    childEnv = { ...db.env, WORKER_CONCURRENCY: '4', TEST_QUEUE_PREFIX: config.queuePrefix, TEST_STALLED_INTERVAL_MS: String(STALLED_MS) };
    workers = await Promise.all([1, 2, 3].map(() => startWorkerProcess(childEnv)));
  });

  afterAll(async () => {
    await killAll();
    await api?.close();
    if (app) {
      await deletePrefix(app.config.queuePrefix);
      await app.close();
    }
    await db?.drop();
  });

  const submit = async (type: string, data: unknown, wait = 0) => {
    const res = await api.inject({ method: 'POST', url: `/api/v1/jobs${wait ? `?wait=${wait}` : ''}`, headers: auth, payload: { type, data } });
    expect([200, 202], res.body).toContain(res.statusCode);
    return res.json() as { id: string; state: string; result: { id: string } | null };
  };

  const jobView = async (id: string) => (await api.inject({ method: 'GET', url: `/api/v1/jobs/${id}`, headers: auth })).json();

  const auditCount = () => app.orm.em.fork().count(AuditRecord, {});

  async function burst(tag: string, configId: string, nodeIds: string[], count: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const kind = i % 3;
      const job =
        kind === 0
          ? await submit('node.create', { configId, name: `${tag}-${i}`, kind: 'static' })
          : kind === 1
            ? await submit('node.update', { id: nodeIds[i % nodeIds.length], listenPort: 10_000 + i })
            : await submit('settings.update', { values: { [`${tag}.k${i}`]: { i } } });
      ids.push(job.id);
    }
    return ids;
  }

  async function allCompleted(ids: string[]): Promise<{ processedBy: Set<string> }> {
    await waitFor(
      `${ids.length} jobs to complete`,
      async () => {
        const views = await Promise.all(ids.map(jobView));
        const failed = views.filter((v) => v.state === 'failed');
        if (failed.length) throw new Error(`jobs failed: ${JSON.stringify(failed.slice(0, 3))}`);
        return views.every((v) => v.state === 'completed');
      },
      120_000,
      500,
    );
    const jobs = await Promise.all(ids.map((id) => app.queues.find(id)));
    return { processedBy: new Set(jobs.map((j) => j!.processedBy?.split(':').at(-1) ?? '?')) };
  }

  let configId: string;
  let nodeIds: string[];

  it('three worker processes complete 600 mixed operations, each runs some, audit rows equal operations', async () => {
    const created = await submit('config.create', { name: 'scale', subnet: '10.50.0.0/16' }, 10_000);
    configId = created.result!.id;
    nodeIds = [];
    for (let i = 0; i < 5; i++) nodeIds.push((await submit('node.create', { configId, name: `seed-${i}`, kind: 'static' }, 10_000)).result!.id);
    const before = await auditCount();

    const ids = await burst('a', configId, nodeIds, 600);
    const { processedBy } = await allCompleted(ids);

    expect(processedBy).toEqual(new Set(workers.map((w) => String(w.pid))));
    expect((await auditCount()) - before).toBe(600);
  });

  it('a worker killed with SIGKILL mid-burst has its jobs taken over, and nothing is applied twice', async () => {
    const before = await auditCount();
    const ids = await burst('b', configId, nodeIds, 300);
    const victim = workers[0]!;
    await waitFor('the victim to be running jobs', async () => {
      const active = await Promise.all(ids.slice(0, 100).map((id) => app.queues.find(id)));
      return active.some((j) => j?.processedBy?.endsWith(`:${victim.pid}`));
    }, 30_000, 20);
    victim.proc.kill('SIGKILL');
    await victim.exited;

    await allCompleted(ids);
    expect((await auditCount()) - before).toBe(300);
  });
});
