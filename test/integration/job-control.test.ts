/**
 * Job control through the API, on both dialects with real workers: delay and priority on
 * submission, cancelling a job that has not started (it never runs), retrying a failed job
 * (it runs once more, its effect applied once), listing pages with a cursor and filters,
 * `wait` up to ten minutes with a failed job answered 422, progress 100 on completion, and
 * retention.prune submittable by the administrator and scheduled by the workers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS } from '../support/db.js';
import { waitFor } from '../support/processes.js';
import { startStack, type JobView, type Stack } from '../support/stack.js';
import { RETENTION_EVERY_MS, RETENTION_SCHEDULER_ID } from '../../src/jobs/retention-schedule.js';
import { QUEUES } from '../../src/jobs/names.js';
import { JobRecord } from '../../src/domain/entities/system.js';

const ADMIN_PASSWORD = 'job-control-test-admin-pw';

describe.each(DIALECTS)('job control on %s', (dialect) => {
  let s: Stack;
  let seq = 0;
  const unique = (p: string) => `${p}-${dialect}-${++seq}`;
  const subnet = () => `10.${70 + (seq % 20)}.${++seq % 250}.0/24`;

  beforeAll(async () => {
    s = await startStack(dialect, 'jobctl', { adminPassword: ADMIN_PASSWORD, workerOptions: { redisSettingsEveryMs: 200 } });
  });
  afterAll(async () => {
    await s?.stop();
  });

  const post = (url: string, payload?: Record<string, unknown>) => s.call({ method: 'POST', url, ...(payload === undefined ? {} : { payload }) });
  const configNamed = async (name: string) =>
    (await s.get<{ items: { id: string; name: string }[] }>('/api/v1/configs?limit=500')).items.filter((c) => c.name === name);
  /**
   * A node.create answered 422 (waited for): the address it asks for is another node's,
   * the holder, whose deletion takes the cause away.
   */
  const failedNodeCreate = async (label: string) => {
    const config = await s.job('config.create', { name: unique(label), subnet: subnet() });
    const configId = config.result!.id as string;
    const holderId = (await s.job('node.create', { configId, name: unique('holder'), kind: 'static' })).result!.id as string;
    const address = (await s.get<{ address: string }>(`/api/v1/nodes/${holderId}`)).address;
    const name = unique(`${label}-node`);
    const failed = await post('/api/v1/jobs?wait=20000', { type: 'node.create', data: { configId, name, kind: 'static', address } });
    expect(failed.statusCode, failed.body).toBe(422);
    return { configId, holderId, name, failed, jobId: failed.json<JobView>().id };
  };

  it('cancels a delayed job, which then never runs, and says so when asked', async () => {
    const name = unique('delayed');
    const res = await post('/api/v1/jobs', { type: 'config.create', data: { name, subnet: subnet() }, delay: 1_500 });
    expect(res.statusCode, res.body).toBe(202);
    const job = res.json<JobView>();
    expect(job.state).toBe('delayed');

    const cancelled = await s.call({ method: 'DELETE', url: `/api/v1/jobs/${job.id}` });
    expect(cancelled.statusCode, cancelled.body).toBe(200);
    expect(cancelled.json()).toEqual({ id: job.id, type: 'config.create', state: 'cancelled' });

    // Past its delay, with a later job through the same queue done: it did not run.
    await new Promise((r) => setTimeout(r, 1_800));
    await s.job('settings.update', { values: { [`after-${seq}`]: 1 } });
    expect(await configNamed(name)).toEqual([]);
    const read = await s.call({ method: 'GET', url: `/api/v1/jobs/${job.id}` });
    expect(read.statusCode).toBe(404);
    expect(read.json().error.code).toBe('UNKNOWN');
    const again = await s.call({ method: 'DELETE', url: `/api/v1/jobs/${job.id}` });
    expect(again.statusCode).toBe(404);
  });

  it('refuses to cancel a finished job with 409 naming its state', async () => {
    const done = await s.job('config.create', { name: unique('done'), subnet: subnet() });
    const res = await s.call({ method: 'DELETE', url: `/api/v1/jobs/${done.id}` });
    expect(res.statusCode).toBe(409);
    expect(res.json().error).toMatchObject({ code: 'CONFLICT', details: { state: 'completed' } });
  });

  it('answers a waited job that failed with 422 and its error, and retries it: it runs once more, its effect applied once', async () => {
    const { configId, holderId, name, failed, jobId } = await failedNodeCreate('retry');
    expect(failed.json()).toMatchObject({ state: 'failed', error: { code: 'CONFLICT' } });

    // The cause goes away; the failed job runs again under its own id.
    await s.job('node.delete', { id: holderId });
    const retried = await post(`/api/v1/jobs/${jobId}/retry?wait=20000`);
    expect(retried.statusCode, retried.body).toBe(200);
    expect(retried.json()).toMatchObject({ id: jobId, state: 'completed', progress: 100, result: { id: expect.any(String) } });

    const nodes = await s.get<{ items: { name: string }[] }>(`/api/v1/configs/${configId}/nodes?limit=500`);
    expect(nodes.items.filter((n) => n.name === name)).toHaveLength(1);
    const audit = await s.get<{ items: unknown[] }>(`/api/v1/audit?action=node.create&entityId=${retried.json<JobView>().result!.id}`);
    expect(audit.items).toHaveLength(1);

    // A completed job is not retried (its effect stays once).
    const twice = await post(`/api/v1/jobs/${jobId}/retry`);
    expect(twice.statusCode).toBe(409);
    expect(twice.json().error.details).toMatchObject({ state: 'completed' });
  });

  it('a retried job whose effect had already committed is answered from its ledger row, not applied again', async () => {
    const { configId, holderId, name, jobId } = await failedNodeCreate('ledger');

    // As if this job had committed once and only its acknowledgement was lost.
    await s.app.orm.em.fork().insert(JobRecord, { jobId, type: 'node.create', result: { id: 'recorded' }, completedAt: new Date() });
    await s.job('node.delete', { id: holderId });
    const retried = await post(`/api/v1/jobs/${jobId}/retry?wait=20000`);
    expect(retried.statusCode, retried.body).toBe(200);
    expect(retried.json()).toMatchObject({ id: jobId, state: 'completed', result: { id: 'recorded' } });
    const nodes = await s.get<{ items: { name: string }[] }>(`/api/v1/configs/${configId}/nodes?limit=500`);
    expect(nodes.items.filter((n) => n.name === name)).toEqual([]);
  });

  it('takes a priority, waits up to ten minutes, and refuses a wait beyond it', async () => {
    const res = await post('/api/v1/jobs?wait=600000', { type: 'settings.update', data: { values: { [unique('p')]: 1 } }, priority: 5 });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toMatchObject({ state: 'completed', progress: 100 });
    const tooLong = await post('/api/v1/jobs?wait=600001', { type: 'settings.update', data: { values: { x: 1 } } });
    expect(tooLong.statusCode).toBe(400);
    const badPriority = await post('/api/v1/jobs', { type: 'settings.update', data: { values: { x: 1 } }, priority: 0 });
    expect(badPriority.statusCode).toBe(400);
    expect(badPriority.json().error.message).toMatch(/priority/);
  });

  it('lists jobs newest first a page at a time with a cursor, filtered by type, state, actor and time', async () => {
    const since = new Date().toISOString();
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push((await s.job('settings.update', { values: { [unique('page')]: i } })).id);
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const url: string = `/api/v1/jobs?type=settings.update&state=completed&actor=admin&since=${encodeURIComponent(since)}&limit=3${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
      const page: { items: JobView[]; next: string | null } = await s.get(url);
      expect(page.items.length).toBeLessThanOrEqual(3);
      seen.push(...page.items.map((j) => j.id));
      cursor = page.next;
      pages++;
    } while (cursor && pages < 10);
    expect(pages).toBe(3);
    expect(seen).toEqual([...ids].reverse());

    const nobody = await s.get<{ items: unknown[] }>(`/api/v1/jobs?actor=token:none&since=${encodeURIComponent(since)}`);
    expect(nobody.items).toEqual([]);
    const before = await s.get<{ items: unknown[] }>(`/api/v1/jobs?type=settings.update&until=${encodeURIComponent(since)}&since=${encodeURIComponent(new Date(Date.parse(since) - 1).toISOString())}`);
    expect(before.items).toEqual([]);
    const bad = await s.call({ method: 'GET', url: '/api/v1/jobs?cursor=nonsense' });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.message).toMatch(/cursor/);
  });

  it('runs retention.prune for the administrator, and the workers schedule it daily, again when Redis lost the schedule', async () => {
    const run = await s.job('retention.prune', {});
    expect(run).toMatchObject({ state: 'completed', result: { ledger: expect.any(Number), idempotencyKeys: expect.any(Number), stagedUploads: expect.any(Number), audit: null } });
    const queue = s.app.queues.queue(QUEUES.operations);
    const scheduler = await waitFor('the retention scheduler', async () => queue.getJobScheduler(RETENTION_SCHEDULER_ID), 10_000);
    expect(scheduler).toMatchObject({ name: 'retention.prune', every: RETENTION_EVERY_MS });

    expect(await queue.removeJobScheduler(RETENTION_SCHEDULER_ID)).toBe(true);
    const back = await waitFor('the retention scheduler registered again', async () => queue.getJobScheduler(RETENTION_SCHEDULER_ID), 10_000);
    expect(back).toMatchObject({ name: 'retention.prune', every: RETENTION_EVERY_MS });
  });
});
