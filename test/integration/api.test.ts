/**
 * The HTTP API end to end, on both dialects: writes go through POST /api/v1/jobs to real
 * workers on real Redis and come back through the read endpoints; secrets are shown once
 * and never stored or shown again; tokens authenticate until revoked; health, metrics,
 * docs and Bull Board answer behind the right authentication.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InjectOptions } from 'fastify';
import { PUBLIC_JOB_TYPES, JOB_TYPES, JOBS, type JobType } from '../../src/jobs/table.js';
import { QUEUE_NAMES } from '../../src/jobs/names.js';
import { hashMqttPassword } from '../../src/domain/secrets.js';
import { DIALECTS } from '../support/db.js';
import { waitFor } from '../support/processes.js';
import { dumpPrefix } from '../support/redis.js';
import { startStack, type Stack } from '../support/stack.js';

const ADMIN_PASSWORD = 'api-test-admin-pw';
const basic = (user: string, password: string) => 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64');
const ADMIN = { authorization: basic('admin', ADMIN_PASSWORD) };
const SECRET_FIELDS = /privateKey|passwordHash|tokenHash|"salt"|privateKeyEnc/;

interface JobView {
  id: string;
  type: string;
  queue: string;
  state: string;
  result: Record<string, unknown> | null;
  error: { code: string; message: string } | null;
}

describe.each(DIALECTS)('HTTP API on %s', (dialect) => {
  let s: Stack;

  beforeAll(async () => {
    s = await startStack(dialect, 'api', { adminPassword: ADMIN_PASSWORD });
  });

  afterAll(async () => {
    await s?.stop();
  });

  const call = (opts: InjectOptions & { auth?: Record<string, string> | null }) =>
    s.api.inject({ ...opts, headers: { ...(opts.auth === null ? {} : (opts.auth ?? ADMIN)), ...opts.headers } });

  /** Submits and waits for the job to finish (200 completed, 422 failed); returns its view. */
  async function run(type: string, data: unknown, headers: Record<string, string> = {}): Promise<JobView> {
    const res = await call({ method: 'POST', url: '/api/v1/jobs?wait=10000', payload: { type, data }, headers });
    const view = res.json<JobView>();
    expect(res.statusCode, res.body).toBe(view.state === 'failed' ? 422 : 200);
    return view;
  }

  async function runOk(type: string, data: unknown): Promise<Record<string, unknown>> {
    const job = await run(type, data);
    expect(job.state, JSON.stringify(job.error)).toBe('completed');
    return job.result!;
  }

  const get = async <T = Record<string, unknown>>(url: string, auth?: Record<string, string> | null) => {
    const res = await call({ method: 'GET', url, auth });
    return { status: res.statusCode, body: res.json<T>(), text: res.body, headers: res.headers };
  };

  let configId: string;
  const nodeIds: string[] = [];

  it('creates a config, nodes and the mesh through jobs and reads them back without secrets', async () => {
    configId = (await runOk('config.create', { name: 'office', subnet: '10.20.0.0/24', dns: ['1.1.1.1'] })).id as string;
    for (const [name, kind] of [['alpha', 'dynamic'], ['beta', 'dynamic'], ['gamma', 'static']] as const) {
      nodeIds.push((await runOk('node.create', { configId, name, kind })).id as string);
    }
    const generated = await runOk('mesh.generate', { configId });
    expect(generated.created).toBe(3);

    const config = await get(`/api/v1/configs/${configId}`);
    expect(config.status).toBe(200);
    expect(config.body).toMatchObject({ id: configId, name: 'office', subnet: '10.20.0.0/24', dns: ['1.1.1.1'] });

    const configs = await get<{ items: { id: string }[]; next: string | null }>('/api/v1/configs');
    expect(configs.body.items.map((c) => c.id)).toContain(configId);

    const nodes = await get<{ items: { id: string; address: string }[]; next: string | null }>(`/api/v1/configs/${configId}/nodes`);
    expect(nodes.body.items.map((n) => n.id).sort()).toEqual([...nodeIds].sort());
    expect(nodes.body.next).toBeNull();

    const links = await get<{ items: { fromNodeId: string; toNodeId: string }[] }>(`/api/v1/configs/${configId}/links?limit=500`);
    expect(links.body.items).toHaveLength(6); // 3 pairs, both directions

    const node = await get<{ id: string; kind: string; credential: { username: string } | null }>(`/api/v1/nodes/${nodeIds[0]}`);
    expect(node.body).toMatchObject({ id: nodeIds[0], kind: 'dynamic', credential: { username: `node-${nodeIds[0]}` } });

    expect((await get(`/api/v1/configs/${configId}/port-forwards`)).body).toEqual({ items: [], next: null });
    for (const text of [config.text, configs.text, nodes.text, links.text, node.text]) expect(text).not.toMatch(SECRET_FIELDS);
  });

  it('pages with limit and cursor', async () => {
    const first = await get<{ items: { id: string }[]; next: string | null }>(`/api/v1/configs/${configId}/nodes?limit=2`);
    expect(first.body.items).toHaveLength(2);
    expect(first.body.next).toEqual(expect.any(String));
    const second = await get<{ items: { id: string }[]; next: string | null }>(
      `/api/v1/configs/${configId}/nodes?limit=2&cursor=${encodeURIComponent(first.body.next!)}`,
    );
    expect(second.body.items).toHaveLength(1);
    expect(second.body.next).toBeNull();
    expect([...first.body.items, ...second.body.items].map((n) => n.id).sort()).toEqual([...nodeIds].sort());
  });

  it('an Idempotency-Key used twice makes one job and one effect; reused for another request it is a 409', async () => {
    const headers = { 'idempotency-key': `settings-${dialect}` };
    const data = { values: { 'ui.theme': 'dark', 'ui.lang': 'en' } };
    const a = await run('settings.update', data, headers);
    // Same request, keys in another order: still the same request.
    const b = await run('settings.update', { values: { 'ui.lang': 'en', 'ui.theme': 'dark' } }, headers);
    expect(b.id).toBe(a.id);
    expect(a.state).toBe('completed');

    const audit = await get<{ items: unknown[] }>('/api/v1/audit?action=settings.update');
    expect(audit.body.items).toHaveLength(1);
    const settings = await get<{ items: { key: string; value: unknown }[] }>('/api/v1/settings');
    expect(settings.body.items).toEqual([
      expect.objectContaining({ key: 'ui.lang', value: 'en' }),
      expect.objectContaining({ key: 'ui.theme', value: 'dark' }),
    ]);

    const other = await call({ method: 'POST', url: '/api/v1/jobs', headers, payload: { type: 'settings.update', data: { values: { x: 1 } } } });
    expect(other.statusCode).toBe(409);
    expect(other.json().error.code).toBe('CONFLICT');
  });

  it('reports a domain failure of a job with its code', async () => {
    const taken = (await get<{ address: string }>(`/api/v1/nodes/${nodeIds[0]}`)).body.address;
    const job = await run('node.create', { configId, name: 'delta', kind: 'static', address: taken });
    expect(job.state).toBe('failed');
    expect(job.error).toMatchObject({ code: 'CONFLICT', message: expect.stringContaining(taken) });

    const again = await get<JobView>(`/api/v1/jobs/${job.id}`);
    expect(again.body).toMatchObject({ id: job.id, type: 'node.create', queue: 'operations', state: 'failed', error: { code: 'CONFLICT' } });
    const failed = await get<{ items: JobView[] }>('/api/v1/jobs?state=failed&type=node.create');
    expect(failed.body.items.map((j) => j.id)).toContain(job.id);
  });

  it('rotates MQTT credentials: the password is shown once and only its hash is stored', async () => {
    const nodeId = nodeIds[1]!;
    const res = await call({ method: 'POST', url: `/api/v1/nodes/${nodeId}/credentials?wait=10000` });
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json<{ job: JobView; username: string; clientId: string; password: string }>();
    expect(body).toMatchObject({ username: `node-${nodeId}`, clientId: `node-${nodeId}`, job: { type: 'node.rotate-credentials', state: 'completed' } });
    expect(body.password.length).toBeGreaterThanOrEqual(24);

    const node = await get<{ credential: { version: number } }>(`/api/v1/nodes/${nodeId}`);
    expect(node.body.credential.version).toBe(2);
    expect(node.text).not.toContain(body.password);
    // The job in Redis holds the hash EMQX checks, never the password.
    const job = await s.app.queues.find(body.job.id);
    const payload = (job!.data as { payload: { passwordHash: string; salt: string } }).payload;
    expect(payload.passwordHash).toBe(hashMqttPassword(body.password, payload.salt));
    const redis = [...(await dumpPrefix(s.app.config.queuePrefix)).values()].join('\n');
    expect(redis).not.toContain(body.password);

    const view = await get<JobView>(`/api/v1/jobs/${body.job.id}`);
    expect(view.text).not.toContain(body.password);

    const stat = await call({ method: 'POST', url: `/api/v1/nodes/${nodeIds[2]}/credentials` });
    expect(stat.statusCode).toBe(400);
    expect(stat.json().error.message).toMatch(/static/);
  });

  it('creates a token that authenticates as Bearer, is recorded as the actor, and stops working once revoked', async () => {
    const expiresAt = new Date(Date.now() + 3_600_000).toISOString();
    const res = await call({ method: 'POST', url: '/api/v1/tokens?wait=10000', payload: { name: 'ci', scopes: ['read', 'operate'], expiresAt } });
    expect(res.statusCode, res.body).toBe(200);
    const { job, id, token } = res.json<{ job: JobView; id: string; token: string }>();
    expect(job.state).toBe('completed');
    expect(token).toMatch(/^mq_/);
    const bearer = { authorization: `Bearer ${token}` };

    expect((await get('/api/v1/configs', bearer)).status).toBe(200);
    const viaToken = await call({ method: 'POST', url: '/api/v1/jobs?wait=10000', auth: bearer, payload: { type: 'settings.update', data: { values: { 'from.token': true } } } });
    expect(viaToken.statusCode).toBe(200);
    const audit = await get<{ items: { actor: string }[] }>('/api/v1/audit?action=settings.update&limit=1');
    expect(audit.body.items[0]!.actor).toBe(`token:${id}`);

    const tokens = await get<{ items: { id: string; name: string; lastUsedAt: string | null }[] }>('/api/v1/tokens');
    expect(tokens.body.items).toEqual([expect.objectContaining({ id, name: 'ci', scopes: ['read', 'operate'], expiresAt })]);
    expect(tokens.text).not.toContain(token);
    expect(tokens.text).not.toMatch(SECRET_FIELDS);
    await waitFor('lastUsedAt to be recorded', async () => {
      const t = await get<{ items: { lastUsedAt: string | null }[] }>('/api/v1/tokens');
      return t.body.items[0]?.lastUsedAt !== null;
    }, 5_000);

    const revoked = await run('token.revoke', { id });
    expect(revoked.state).toBe('completed');
    const after = await get<{ error: { code: string } }>('/api/v1/configs', bearer);
    expect(after.status).toBe(401);
    expect(after.body.error.code).toBe('UNAUTHORIZED');
    expect(after.headers['www-authenticate']).toBe('Basic realm="meshq"');
  });

  it('lists every job type with its queue and payload JSON Schema, internal ones marked', async () => {
    const res = await get<{ items: { type: string; queue: string; internal: boolean; description: string; schema: { type?: string } }[] }>('/api/v1/job-types');
    expect(res.status).toBe(200);
    expect(res.body.items.map((t) => t.type).sort()).toEqual([...JOB_TYPES].sort());
    for (const type of PUBLIC_JOB_TYPES) {
      const entry = res.body.items.find((t) => t.type === type)!;
      expect(entry).toMatchObject({ internal: false, queue: expect.any(String), description: expect.any(String) });
      expect(entry.schema.type).toBe('object');
    }
    expect(res.body.items.find((t) => t.type === 'token.create')!.internal).toBe(true);
    // Each type names the scope a caller needs, from its row in the job table.
    for (const item of res.body.items as { type: JobType; scope?: string }[]) expect(item.scope, item.type).toBe(JOBS[item.type].scope);
    expect(res.body.items.find((t) => t.type === 'node.rotate-credentials')).toMatchObject({ scope: 'credentials', endpoint: 'POST /api/v1/nodes/{id}/credentials' });
  });

  it('answers health probes without credentials and readiness with its checks', async () => {
    const health = await get('/healthz', null);
    expect(health).toMatchObject({ status: 200, body: { status: 'ok' } });
    const ready = await get<{ status: string; checks: Record<string, { ok: boolean }> }>('/readyz', null);
    expect(ready.status).toBe(200);
    expect(ready.body.checks).toEqual({ database: { ok: true }, redis: { ok: true }, migrations: { ok: true } });
  });

  it('serves Prometheus metrics with queue depth and HTTP requests (jobs are the workers\' to count), behind authentication', async () => {
    expect((await call({ method: 'GET', url: '/metrics', auth: null })).statusCode).toBe(401);
    const res = await call({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain/);
    expect(res.body).toMatch(/^meshq_queue_jobs\{queue="operations",state="completed"\} [1-9]\d*$/m);
    expect(res.body).toMatch(/^meshq_queue_jobs\{queue="snapshot-restore",state="waiting"\} 0$/m);
    expect(res.body).toMatch(/^meshq_http_requests_total\{method="POST",route="\/api\/v1\/jobs",status="200"\} [1-9]\d*$/m);
    expect(res.body).toMatch(/^meshq_http_requests_total\{method="GET",route="\/metrics",status="401"\} 1$/m);
    expect(res.body).not.toMatch(/^meshq_job/m);
  });

  it('serves the OpenAPI document and Swagger UI at /docs', async () => {
    const ui = await call({ method: 'GET', url: '/docs' });
    expect([200, 302]).toContain(ui.statusCode);
    const doc = await get<{ openapi: string; paths: Record<string, unknown> }>('/docs/json');
    expect(doc.status).toBe(200);
    expect(doc.body.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.body.paths)).toEqual(expect.arrayContaining(['/api/v1/jobs', '/api/v1/jobs/{id}', '/api/v1/configs/{id}/nodes', '/api/v1/tokens']));
    expect((await call({ method: 'GET', url: '/docs/json', auth: null })).statusCode).toBe(401);
  });

  it('guards Bull Board and shows job data with secrets redacted', async () => {
    const anon = await call({ method: 'GET', url: '/admin/queues', auth: null });
    expect(anon.statusCode).toBe(401);
    expect(anon.headers['www-authenticate']).toBe('Basic realm="meshq"');
    expect((await call({ method: 'GET', url: '/admin/queues/api/queues', auth: null })).statusCode).toBe(401);
    expect((await call({ method: 'GET', url: '/admin/queues', auth: { authorization: basic('admin', 'wrong-password') } })).statusCode).toBe(401);

    const page = await call({ method: 'GET', url: '/admin/queues' });
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-type']).toMatch(/text\/html/);

    const res = await call({ method: 'GET', url: '/admin/queues/api/queues?activeQueue=operations&status=completed&jobsPerPage=100' });
    expect(res.statusCode).toBe(200);
    const { queues } = res.json<{ queues: { name: string; jobs: { name: string; data: { payload: Record<string, unknown> } }[] }[] }>();
    expect(queues.map((q) => q.name).sort()).toEqual([...QUEUE_NAMES].sort());
    const jobs = queues.find((q) => q.name === 'operations')!.jobs;
    const rotation = jobs.find((j) => j.name === 'node.rotate-credentials')!;
    expect(rotation.data.payload).toMatchObject({ nodeId: nodeIds[1], passwordHash: '[redacted]', salt: '[redacted]' });
    const tokenJob = jobs.find((j) => j.name === 'token.create')!;
    expect(tokenJob.data.payload).toMatchObject({ name: 'ci', tokenHash: '[redacted]' });
    expect(res.body).not.toMatch(/[0-9a-f]{64}/);
  });

  it('answers unknown routes with 404 and an error body', async () => {
    const res = await get<{ error: { code: string; message: string } }>('/api/v1/nope');
    expect(res.status).toBe(404);
    expect(res.body.error).toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining('/api/v1/nope') });
  });
});
