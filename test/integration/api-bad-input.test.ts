/**
 * Every way a request can be wrong gets the right status, a stable error code, a message
 * that names the problem, and enqueues nothing: the queues' counts are the same before
 * and after each rejected request.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InjectOptions } from 'fastify';
import type { AppContext } from '../../src/bin/bootstrap.js';
import { buildApi } from '../../src/api/app.js';
import { DIALECTS } from '../support/db.js';
import { startStack, type Stack } from '../support/stack.js';

const ADMIN_PASSWORD = 'bad-input-admin-pw';
const basic = (user: string, password: string) => 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64');
const ADMIN = { authorization: basic('admin', ADMIN_PASSWORD) };
const UNKNOWN_ID = '01890a5d-ac96-774b-bcce-b302099a8057';
const BODY_LIMIT = 64 * 1024;

interface Case {
  name: string;
  request: (ids: { configId: string; staticNodeId: string }) => InjectOptions;
  status: number;
  code: string;
  message: RegExp;
}

const job = (type: string, data: unknown): Pick<InjectOptions, 'method' | 'url' | 'payload'> => ({
  method: 'POST',
  url: '/api/v1/jobs',
  payload: { type, data },
});

const CASES: Case[] = [
  {
    name: 'malformed JSON',
    request: () => ({ method: 'POST', url: '/api/v1/jobs', headers: { 'content-type': 'application/json' }, payload: '{"type": "config.create", "data": {' }),
    status: 400,
    code: 'INVALID',
    message: /^body: .*JSON/,
  },
  {
    name: 'an empty JSON body',
    request: () => ({ method: 'POST', url: '/api/v1/jobs', headers: { 'content-type': 'application/json' }, payload: '' }),
    status: 400,
    code: 'INVALID',
    message: /^body: /,
  },
  { name: 'an unknown job type', request: () => job('config.explode', {}), status: 400, code: 'INVALID', message: /unknown job type "config\.explode"/ },
  { name: 'an internal job type', request: () => job('token.create', { id: UNKNOWN_ID, name: 'x', tokenHash: 'a'.repeat(64) }), status: 400, code: 'INVALID', message: /internal.*own endpoint/ },
  { name: 'a missing field', request: () => job('config.create', { subnet: '10.9.0.0/24' }), status: 400, code: 'INVALID', message: /\bname\b/ },
  { name: 'a mistyped field', request: () => job('config.create', { name: 'typed', subnet: '10.9.0.0/24', listenPort: 'fast' }), status: 400, code: 'INVALID', message: /listenPort/ },
  { name: 'an extra field in the payload', request: () => job('config.create', { name: 'extra', subnet: '10.9.0.0/24', colour: 'red' }), status: 400, code: 'INVALID', message: /colour/ },
  {
    name: 'an extra field beside type and data',
    request: () => ({ method: 'POST', url: '/api/v1/jobs', payload: { type: 'config.create', data: { name: 'x', subnet: '10.9.0.0/24' }, colour: 'red' } }),
    status: 400,
    code: 'INVALID',
    message: /^body.*colour/,
  },
  { name: 'no type at all', request: () => ({ method: 'POST', url: '/api/v1/jobs', payload: { data: {} } }), status: 400, code: 'INVALID', message: /body\.type/ },
  {
    name: 'an oversize body',
    request: () => job('settings.update', { values: { big: 'x'.repeat(BODY_LIMIT + 1) } }),
    status: 413,
    code: 'PAYLOAD_TOO_LARGE',
    message: new RegExp(`too large: the limit is ${BODY_LIMIT} bytes`),
  },
  { name: 'an invalid CIDR', request: () => job('config.create', { name: 'cidr', subnet: '10.9.0.0/33' }), status: 400, code: 'INVALID', message: /subnet/ },
  { name: 'an address outside IP syntax', request: ({ configId }) => job('node.create', { configId, name: 'n', kind: 'static', address: '10.9.0.300' }), status: 400, code: 'INVALID', message: /address/ },
  { name: 'a wait beyond 10 minutes', request: () => ({ ...job('config.create', { name: 'w', subnet: '10.9.0.0/24' }), url: '/api/v1/jobs?wait=600001' }), status: 400, code: 'INVALID', message: /query\.wait/ },
  { name: 'a malformed Idempotency-Key', request: () => ({ ...job('config.create', { name: 'k', subnet: '10.9.0.0/24' }), headers: { 'idempotency-key': 'has spaces in it' } }), status: 400, code: 'INVALID', message: /idempotency-key/ },
  { name: 'an unknown config id in a job', request: () => job('node.create', { configId: UNKNOWN_ID, name: 'n', kind: 'static' }), status: 404, code: 'NOT_FOUND', message: new RegExp(`config ${UNKNOWN_ID} does not exist`) },
  { name: 'an unknown config id for mesh.generate', request: () => job('mesh.generate', { configId: UNKNOWN_ID }), status: 404, code: 'NOT_FOUND', message: /config .* does not exist/ },
  { name: 'an unknown node id in a job', request: () => job('node.update', { id: UNKNOWN_ID, name: 'renamed' }), status: 404, code: 'NOT_FOUND', message: /node .* does not exist/ },
  { name: 'an unknown token id', request: () => job('token.revoke', { id: UNKNOWN_ID }), status: 404, code: 'NOT_FOUND', message: /token .* does not exist/ },
  {
    name: 'a port forward to a node of no such id',
    request: ({ configId, staticNodeId }) => job('port-forward.create', { configId, fromNodeId: staticNodeId, fromPort: 80, toNodeId: UNKNOWN_ID, toPort: 8080, protocol: 'tcp' }),
    status: 404,
    code: 'NOT_FOUND',
    message: /node .* does not exist/,
  },
  { name: 'credentials of an unknown node', request: () => ({ method: 'POST', url: `/api/v1/nodes/${UNKNOWN_ID}/credentials` }), status: 404, code: 'NOT_FOUND', message: /node .* does not exist/ },
  { name: 'credentials of a static node', request: ({ staticNodeId }) => ({ method: 'POST', url: `/api/v1/nodes/${staticNodeId}/credentials` }), status: 400, code: 'INVALID', message: /static/ },
  { name: 'a token with an empty name', request: () => ({ method: 'POST', url: '/api/v1/tokens', payload: { name: '' } }), status: 400, code: 'INVALID', message: /body\.name/ },
  { name: 'a token request with an Idempotency-Key', request: () => ({ method: 'POST', url: '/api/v1/tokens', payload: { name: 'x' }, headers: { 'idempotency-key': 'k1' } }), status: 400, code: 'INVALID', message: /Idempotency-Key/ },
  { name: 'a duplicate config name', request: () => job('config.create', { name: 'taken', subnet: '10.99.0.0/24' }), status: 409, code: 'CONFLICT', message: /config named "taken" already exists/ },
  { name: 'a rename onto a taken config name', request: ({ configId }) => job('config.update', { id: configId, name: 'other' }), status: 409, code: 'CONFLICT', message: /"other" already exists/ },
  { name: 'no credentials', request: () => ({ ...job('config.create', { name: 'anon', subnet: '10.9.0.0/24' }), headers: { authorization: '' } }), status: 401, code: 'UNAUTHORIZED', message: /authentication required/ },
  { name: 'a wrong password', request: () => ({ ...job('config.create', { name: 'pw', subnet: '10.9.0.0/24' }), headers: { authorization: basic('admin', 'not-the-password') } }), status: 401, code: 'UNAUTHORIZED', message: /wrong administrator name or password/ },
  { name: 'a wrong user name', request: () => ({ ...job('config.create', { name: 'pw', subnet: '10.9.0.0/24' }), headers: { authorization: basic('root', ADMIN_PASSWORD) } }), status: 401, code: 'UNAUTHORIZED', message: /wrong administrator name or password/ },
  { name: 'a wrong bearer token', request: () => ({ ...job('config.create', { name: 'tok', subnet: '10.9.0.0/24' }), headers: { authorization: 'Bearer mq_not-a-real-token' } }), status: 401, code: 'UNAUTHORIZED', message: /unknown or revoked API token/ },
  { name: 'an unsupported auth scheme', request: () => ({ method: 'GET', url: '/api/v1/configs', headers: { authorization: 'Digest abc' } }), status: 401, code: 'UNAUTHORIZED', message: /unsupported authorization scheme "Digest"/ },
  { name: 'an unknown config on a read', request: () => ({ method: 'GET', url: `/api/v1/configs/${UNKNOWN_ID}` }), status: 404, code: 'NOT_FOUND', message: /config .* does not exist/ },
  { name: 'the nodes of an unknown config', request: () => ({ method: 'GET', url: `/api/v1/configs/${UNKNOWN_ID}/nodes` }), status: 404, code: 'NOT_FOUND', message: /config .* does not exist/ },
  { name: 'an unknown node on a read', request: () => ({ method: 'GET', url: `/api/v1/nodes/${UNKNOWN_ID}` }), status: 404, code: 'NOT_FOUND', message: /node .* does not exist/ },
  { name: 'a malformed id in a path', request: () => ({ method: 'GET', url: '/api/v1/nodes/not-a-uuid' }), status: 400, code: 'INVALID', message: /path\.id/ },
  { name: 'an unknown job id', request: () => ({ method: 'GET', url: '/api/v1/jobs/no-such-job' }), status: 404, code: 'UNKNOWN', message: /job no-such-job is unknown here: it may never have existed, or it finished and has expired/ },
  { name: 'an unknown job state filter', request: () => ({ method: 'GET', url: '/api/v1/jobs?state=sleeping' }), status: 400, code: 'INVALID', message: /query\.state/ },
  { name: 'a job limit of 0', request: () => ({ method: 'GET', url: '/api/v1/jobs?limit=0' }), status: 400, code: 'INVALID', message: /query\.limit/ },
  { name: 'a read limit above 500', request: () => ({ method: 'GET', url: '/api/v1/configs?limit=501' }), status: 400, code: 'INVALID', message: /query\.limit/ },
  { name: 'a cursor no list returned', request: () => ({ method: 'GET', url: '/api/v1/configs?cursor=garbage' }), status: 400, code: 'INVALID', message: /cursor/ },
  { name: 'an unknown query parameter', request: () => ({ method: 'GET', url: '/api/v1/configs?limt=5' }), status: 400, code: 'INVALID', message: /limt/ },
  { name: 'an unknown route', request: () => ({ method: 'GET', url: '/api/v1/nothing-here' }), status: 404, code: 'NOT_FOUND', message: /no route GET \/api\/v1\/nothing-here/ },
];

describe.each(DIALECTS)('bad input on %s', (dialect) => {
  let s: Stack;
  const ids = { configId: '', staticNodeId: '' };

  beforeAll(async () => {
    s = await startStack(dialect, 'api_bad_input', { adminPassword: ADMIN_PASSWORD, apiOptions: { bodyLimit: BODY_LIMIT } });
    const run = async (type: string, data: unknown) => {
      const res = await s.api.inject({ method: 'POST', url: '/api/v1/jobs?wait=10000', headers: ADMIN, payload: { type, data } });
      const view = res.json();
      if (view.state !== 'completed') throw new Error(`setup job ${type} did not complete: ${res.body}`);
      return view.result as { id: string };
    };
    ids.configId = (await run('config.create', { name: 'taken', subnet: '10.9.0.0/24' })).id;
    await run('config.create', { name: 'other', subnet: '10.10.0.0/24' });
    ids.staticNodeId = (await run('node.create', { configId: ids.configId, name: 'static-1', kind: 'static' })).id;
  });

  afterAll(async () => {
    await s?.stop();
  });

  it.each(CASES)('$name -> $status $code, nothing enqueued', async ({ request, status, code, message }) => {
    const before = await s.app.queues.counts();
    const req = request(ids);
    const res = await s.api.inject({ ...req, headers: { ...ADMIN, ...(req.headers as Record<string, string>) } });

    expect(res.statusCode, res.body).toBe(status);
    const body = res.json<{ error: { code: string; message: string } }>();
    expect(body.error.code).toBe(code);
    expect(body.error.message).toMatch(message);
    if (status === 401) expect(res.headers['www-authenticate']).toBe('Basic realm="meshq"');
    expect(await s.app.queues.counts()).toEqual(before);
  });

  it('drops a __proto__ key of a JSON body, written plainly or with \\u escapes', async () => {
    for (const [i, key] of ['__proto__', '\\u005f_proto__'].entries()) {
      const payload = `{"type":"config.create","data":{"name":"proto-${i}","subnet":"10.${60 + i}.0.0/24"},"${key}":{"polluted":true}}`;
      const res = await s.api.inject({ method: 'POST', url: '/api/v1/jobs', headers: { ...ADMIN, 'content-type': 'application/json' }, payload });
      // The body schema is strict: a kept "__proto__" key would be a 400 naming it.
      expect(res.statusCode, res.body).toBe(202);
    }
    expect(({} as { polluted?: boolean }).polluted).toBeUndefined();
  });

  it('a burst of submissions for known and unknown nodes: each gets its own answer, only the known are enqueued', async () => {
    // Concurrent requests share the API's batched node-id probes (src/jobs/prechecks.ts).
    const unknown = Array.from({ length: 12 }, (_, i) => `01890a5d-ac96-774b-bcce-${String(i).padStart(12, '0')}`);
    const burst = [...unknown.map((id) => ({ id, known: false })), ...Array.from({ length: 12 }, () => ({ id: ids.staticNodeId, known: true }))].sort(
      () => Math.random() - 0.5,
    );
    const before = await s.app.queues.counts();
    const answers = await Promise.all(
      burst.map(({ id }, i) => s.api.inject({ ...job('node.update', { id, listenPort: 40_000 + i }), headers: ADMIN })),
    );
    answers.forEach((res, i) => {
      const { id, known } = burst[i]!;
      expect(res.statusCode, res.body).toBe(known ? 202 : 404);
      if (!known) expect(res.json<{ error: { message: string } }>().error.message).toBe(`node ${id} does not exist`);
    });
    const after = await s.app.queues.counts();
    const enqueued = (c: typeof before) => Object.values(c).reduce((n, q) => n + q.waiting! + q.active! + q.completed! + q.failed! + q.delayed!, 0);
    expect(enqueued(after) - enqueued(before)).toBe(12);
  });

  it('says nothing about the inside when something unexpected fails', async () => {
    // A job lookup that throws a non-domain error carrying internals in its message.
    const queues = Object.create(s.app.queues, {
      find: { value: async () => Promise.reject(new Error('ERR from inside: SELECT secret FROM vault')) },
    }) as AppContext['queues'];
    const broken = await buildApi({ ...s.app, queues });
    try {
      const res = await broken.inject({ method: 'GET', url: '/api/v1/jobs/some-job', headers: ADMIN });
      expect(res.statusCode).toBe(500);
      const body = res.json<{ error: { code: string; message: string; details: { requestId: string } } }>();
      expect(body.error.code).toBe('INTERNAL');
      expect(res.body).not.toContain('SELECT');
      expect(body.error.details.requestId).toEqual(expect.any(String));
    } finally {
      await broken.close();
    }
  });
});
