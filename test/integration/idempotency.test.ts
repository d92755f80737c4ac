/**
 * Idempotency-Key that holds, on both dialects with real workers: concurrent requests with
 * one key get one job, one effect and one answer; once the job has left Redis a retry gets
 * the recorded outcome from the ledger, never a 409 or 404 caused by its own first attempt;
 * another request with the key is still a 409. GET /api/v1/jobs/:id answers a completed job
 * Redis no longer has from the ledger, and an id nobody can place as UNKNOWN. A retry
 * after a 503 whose job got into Redis anyway gets that job.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotentJobId } from '../../src/jobs/queue-client.js';
import { DIALECTS } from '../support/db.js';
import { startStack, type JobView, type Stack } from '../support/stack.js';

const ADMIN_PASSWORD = 'idempotency-test-admin-pw';

describe.each(DIALECTS)('Idempotency-Key on %s', (dialect) => {
  let s: Stack;

  beforeAll(async () => {
    s = await startStack(dialect, 'idem', { adminPassword: ADMIN_PASSWORD });
  });
  afterAll(async () => {
    await s?.stop();
  });

  const submit = (key: string, type: string, data: unknown, wait = 20_000) =>
    s.call({ method: 'POST', url: `/api/v1/jobs?wait=${wait}`, headers: { 'idempotency-key': key }, payload: { type, data } });
  const auditCount = async (action: string, entityId?: string) =>
    (await s.get<{ items: unknown[] }>(`/api/v1/audit?action=${action}${entityId ? `&entityId=${entityId}` : ''}&limit=500`)).items.length;
  const removeFromRedis = async (id: string) => {
    const job = await s.app.queues.find(id);
    expect(job, `job ${id} in Redis`).toBeDefined();
    await job!.remove();
    expect(await s.app.queues.find(id)).toBeUndefined();
  };

  it('20 concurrent requests with one key get 20 identical answers, from one job with one effect', async () => {
    const data = { name: `conc-${dialect}`, subnet: '10.61.0.0/24' };
    const answers = await Promise.all(Array.from({ length: 20 }, () => submit(`conc-${dialect}`, 'config.create', data)));
    const bodies = answers.map((r) => ({ status: r.statusCode, id: r.json<JobView>().id, state: r.json<JobView>().state, result: r.json<JobView>().result }));
    expect(bodies[0]).toMatchObject({ status: 200, state: 'completed', result: { id: expect.any(String) } });
    for (const b of bodies) expect(b).toEqual(bodies[0]);

    const configs = await s.get<{ items: { name: string }[] }>('/api/v1/configs?limit=500');
    expect(configs.items.filter((c) => c.name === data.name)).toHaveLength(1);
    expect(await auditCount('config.create', bodies[0]!.result!.id as string)).toBe(1);
    const jobs = await s.app.queues.list({ type: 'config.create', limit: 500 });
    expect(jobs.items.filter((j) => j.id === bodies[0]!.id)).toHaveLength(1);
  });

  it('a retry after a 503 whose job did get in (a failover mid-command) gets that job, not a 409 from its effect', async () => {
    // What such a first attempt leaves behind: its job in Redis (and run), and no key row,
    // since the 503 gave the key back.
    const key = `lost-answer-${dialect}`;
    const data = { name: `lost-answer-${dialect}`, subnet: '10.63.0.0/24' };
    const jobId = idempotentJobId('admin', key);
    const first = await s.app.queues.submit('config.create', data, { actor: 'admin', jobId });
    const done = await s.app.queues.waitFor(first, 20_000);
    expect(done.state).toBe('completed');

    const retry = await submit(key, 'config.create', data);
    expect(retry.statusCode, retry.body).toBe(200);
    expect(retry.json()).toMatchObject({ id: jobId, state: 'completed', result: done.result });
    expect(await auditCount('config.create', (done.result as { id: string }).id)).toBe(1);
    // The key is taken now: another request with it is still a conflict.
    expect((await submit(key, 'config.create', { ...data, name: 'another' })).statusCode).toBe(409);
  });

  it('after the job left Redis, a retry with the key gets the recorded outcome, not a 409 from its own effect', async () => {
    const data = { name: `gone-${dialect}`, subnet: '10.62.0.0/24' };
    const first = await submit(`gone-${dialect}`, 'config.create', data);
    expect(first.statusCode, first.body).toBe(200);
    const job = first.json<JobView>();
    await removeFromRedis(job.id);

    const again = await submit(`gone-${dialect}`, 'config.create', { subnet: '10.62.0.0/24', name: data.name });
    expect(again.statusCode, again.body).toBe(200);
    expect(again.json()).toMatchObject({ id: job.id, type: 'config.create', state: 'completed', progress: 100, result: job.result, error: null });
    expect(await auditCount('config.create', job.result!.id as string)).toBe(1);

    // Reading the job itself: answered from the ledger as well.
    const read = await s.call({ method: 'GET', url: `/api/v1/jobs/${job.id}` });
    expect(read.statusCode, read.body).toBe(200);
    expect(read.json()).toMatchObject({ id: job.id, state: 'completed', result: job.result, attempts: null, queue: 'operations' });

    // The key used for another request is still refused, naming the job.
    const other = await submit(`gone-${dialect}`, 'config.create', { ...data, subnet: '10.63.0.0/24' });
    expect(other.statusCode).toBe(409);
    expect(other.json().error).toMatchObject({ code: 'CONFLICT', details: { jobId: job.id } });
  });

  it('a delete retried after its job left Redis gets its outcome, not a 404 from its own effect', async () => {
    const created = await s.job('config.create', { name: `del-${dialect}`, subnet: '10.64.0.0/24' });
    const id = created.result!.id as string;
    const first = await submit(`del-${dialect}`, 'config.delete', { id });
    expect(first.statusCode, first.body).toBe(200);
    await removeFromRedis(first.json<JobView>().id);
    const again = await submit(`del-${dialect}`, 'config.delete', { id });
    expect(again.statusCode, again.body).toBe(200);
    expect(again.json()).toMatchObject({ id: first.json<JobView>().id, state: 'completed' });
  });

  it('a request the checks refuse gives its key back: each of its concurrent copies is checked and refused the same way', async () => {
    const missing = '0190a000-0000-7000-8000-000000000000';
    const refused = await Promise.all(Array.from({ length: 5 }, () => submit(`refused-${dialect}`, 'config.delete', { id: missing })));
    for (const r of refused) expect(r.statusCode, r.body).toBe(404);
  });

  it('answers an id neither Redis nor the ledger holds as UNKNOWN, saying it may have expired', async () => {
    const res = await s.call({ method: 'GET', url: '/api/v1/jobs/never-was-here' });
    expect(res.statusCode).toBe(404);
    expect(res.json().error.code).toBe('UNKNOWN');
    expect(res.json().error.message).toMatch(/expired/);
    expect(res.json().error.message).not.toMatch(/does not exist/);
  });
});
