/**
 * Authorization, table-driven from the two places that declare it: every route the API
 * registered (with the scope its config names) and every job type in the job table (with
 * its row's scope). Each is called by a token of every scope and by the administrator,
 * and must be allowed or answered 403 exactly as declared. A route or a job type without
 * a scope fails here (and a route without one fails the API's start-up, tested below).
 *
 * The matrix runs on SQLite only: whether a caller may reach a route is decided before
 * any handler touches data (in onRequest, or in preHandler from the validated body), by
 * rules that read only the token row, which both dialects store alike; the token rows
 * themselves (scopes, expiry, last use) are checked on both dialects further down.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import Fastify, { type InjectOptions } from 'fastify';
import { pino } from 'pino';
import { registerAuth, DEFAULT_AUTH_LIMITS, type RegisteredRoute } from '../../src/api/auth.js';
import { JOB_TYPES, PUBLIC_JOB_TYPES, jobDefinition } from '../../src/jobs/table.js';
import { SCOPES, hasScope, isScope, type Scope } from '../../src/domain/scopes.js';
import { hashToken } from '../../src/domain/secrets.js';
import { newId } from '../../src/domain/ids.js';
import { createRepositories } from '../../src/repositories/index.js';
import { DIALECTS } from '../support/db.js';
import { startStack, type Stack } from '../support/stack.js';

const ADMIN_PASSWORD = 'authorization-test-admin-pw';
const SOME_UUID = '0190f6f5-7b1a-7c3e-9d2f-123456789abc';

interface Caller {
  label: string;
  name: string;
  scopes: readonly Scope[];
  headers: Record<string, string>;
}

/** Stores a token straight through the repository (no worker needed) and returns its bearer header. */
async function storeToken(s: Stack, name: string, scopes: Scope[], expiresAt: Date | null = null): Promise<{ id: string; headers: Record<string, string> }> {
  const id = newId();
  const token = `mq_test_${id}`;
  await s.app.uow.write(async (em) => {
    createRepositories(em, { serverKey: s.app.serverKey }).tokens.create({ id, name, tokenHash: hashToken(token), scopes, expiresAt });
  });
  return { id, headers: { authorization: `Bearer ${token}` } };
}

/** A concrete URL for a route pattern: every parameter a UUID, every wildcard a file name. */
const concreteUrl = (pattern: string) => pattern.replace(/:[A-Za-z_]+/g, SOME_UUID).replace(/\*$/, 'x.js');

const forbiddenBody = (name: string, scope: Scope) => ({ error: { code: 'FORBIDDEN', message: `token "${name}" lacks scope "${scope}"` } });

describe('authorization matrix: every route and every job type against every scope (sqlite)', () => {
  let s: Stack;
  const callers: Caller[] = [];

  beforeAll(async () => {
    s = await startStack('sqlite', 'authz', { adminPassword: ADMIN_PASSWORD, workers: false });
    for (const scope of SCOPES) {
      const name = `only-${scope}`;
      callers.push({ label: `token with ${scope}`, name, scopes: [scope], headers: (await storeToken(s, name, [scope])).headers });
    }
    callers.push({ label: 'administrator (Basic)', name: 'admin', scopes: ['admin'], headers: s.auth });
  });

  afterAll(async () => {
    await s?.stop();
  });

  const inject = (opts: InjectOptions) => s.api.inject(opts);

  it('has a valid scope on every registered route, and registered the routes it is expected to', () => {
    const routes = s.api.meshqRoutes();
    const invalid = routes.filter((r) => !(typeof r.scope === 'function' || r.scope === 'public' || r.scope === 'never' || (r.scope !== undefined && isScope(r.scope))));
    expect(invalid.map((r) => `${r.method} ${r.url}`)).toEqual([]);
    const urls = routes.map((r) => `${r.method} ${r.url}`);
    expect(urls).toEqual(
      expect.arrayContaining(['POST /api/v1/jobs', 'GET /api/v1/tokens', 'POST /api/v1/tokens', 'POST /api/v1/snapshots/restore', 'GET /metrics', 'GET /docs/json', 'GET /admin/queues/api/queues']),
    );
    expect(routes.length).toBeGreaterThan(40);
  });

  it('allows or refuses every route for every scope exactly as the route declares', async () => {
    const routes: RegisteredRoute[] = s.api.meshqRoutes().filter((r) => typeof r.scope !== 'function');
    const wrong: string[] = [];
    for (const route of routes) {
      // An allowed caller of the event stream would get a stream that never ends; a filter
      // the route refuses (400) answers at once, after the scope check.
      const url = route.url === '/api/v1/events' ? `${concreteUrl(route.url)}?types=%21` : concreteUrl(route.url);
      for (const caller of callers) {
        const res = await inject({ method: route.method as InjectOptions['method'], url, headers: caller.headers });
        const where = `${route.method} ${route.url} as ${caller.label}: ${res.statusCode} ${res.body.slice(0, 200)}`;
        if (route.scope === 'never') {
          if (res.statusCode !== 403) wrong.push(`${where} (expected 403: disabled for everyone)`);
        } else if (route.scope === 'public' || hasScope(caller.scopes, route.scope as Scope)) {
          if (res.statusCode === 401 || res.statusCode === 403) wrong.push(`${where} (expected allowed)`);
        } else {
          if (res.statusCode !== 403) wrong.push(`${where} (expected 403)`);
          // HEAD answers carry no body.
          else if (route.method !== 'HEAD' && JSON.stringify(res.json()) !== JSON.stringify(forbiddenBody(caller.name, route.scope as Scope))) wrong.push(`${where} (wrong 403 body)`);
        }
      }
    }
    expect(wrong).toEqual([]);
  });

  it('gives every job type a scope in the job table', () => {
    const missing = JOB_TYPES.filter((t) => !isScope(jobDefinition(t).scope));
    expect(missing).toEqual([]);
  });

  it('allows or refuses POST /api/v1/jobs for every job type and scope by the job table, before the payload is checked', async () => {
    const wrong: string[] = [];
    for (const type of JOB_TYPES) {
      const scope = jobDefinition(type).scope;
      for (const caller of callers) {
        // An empty payload: allowed callers get the payload's 400 (nothing is enqueued),
        // refused ones must get the 403 before their payload is even looked at.
        const res = await inject({ method: 'POST', url: '/api/v1/jobs', headers: caller.headers, payload: { type, data: {} } });
        const where = `${type} (${scope}) as ${caller.label}: ${res.statusCode} ${res.body.slice(0, 200)}`;
        if (hasScope(caller.scopes, scope)) {
          if (res.statusCode === 401 || res.statusCode === 403) wrong.push(`${where} (expected allowed)`);
        } else if (res.statusCode !== 403 || JSON.stringify(res.json()) !== JSON.stringify(forbiddenBody(caller.name, scope))) {
          wrong.push(`${where} (expected 403)`);
        }
      }
    }
    expect(wrong).toEqual([]);
  });

  it('accepts a valid public job only from a caller with its scope', async () => {
    // One real submission per public type would need real targets; config.create needs
    // none, and is `operate` like most of the table.
    expect(PUBLIC_JOB_TYPES).toContain('config.create');
    for (const caller of callers) {
      const res = await inject({
        method: 'POST',
        url: '/api/v1/jobs',
        headers: caller.headers,
        payload: { type: 'config.create', data: { name: `by-${caller.name}`, subnet: '10.99.0.0/24' } },
      });
      expect(res.statusCode, `${caller.label}: ${res.body}`).toBe(hasScope(caller.scopes, 'operate') ? 202 : 403);
    }
  });

  it('refuses to start an API with a route that declares no scope', async () => {
    const api = Fastify({ logger: false });
    registerAuth(api, { uow: s.app.uow, serverKey: s.app.serverKey, log: pino({ level: 'silent' }) }, { check: async () => 0, recordFailure: async () => {} }, DEFAULT_AUTH_LIMITS);
    api.get('/guarded', { config: { scope: 'read' } }, async () => ({ ok: true }));
    api.get('/forgotten', async () => ({ ok: true }));
    await expect(api.ready()).rejects.toThrow(/GET \/forgotten/);
    await api.close().catch(() => undefined);
  });
});

describe.each(DIALECTS)('API tokens on %s', (dialect) => {
  let s: Stack;

  beforeAll(async () => {
    s = await startStack(dialect, 'authz-tokens', { adminPassword: ADMIN_PASSWORD });
  });

  afterAll(async () => {
    await s?.stop();
  });

  it('creates a token with the given scopes and expiry (default read, no expiry) and lists them with the last use', async () => {
    const expiresAt = new Date(Date.now() + 86_400_000).toISOString();
    const scoped = await s.call({ method: 'POST', url: '/api/v1/tokens?wait=10000', payload: { name: 'deployer', scopes: ['operate', 'snapshots'], expiresAt } });
    expect(scoped.statusCode, scoped.body).toBe(200);
    const plain = await s.call({ method: 'POST', url: '/api/v1/tokens?wait=10000', payload: { name: 'viewer' } });
    expect(plain.statusCode, plain.body).toBe(200);
    const viewer = plain.json<{ id: string; token: string }>();
    expect((await s.api.inject({ method: 'GET', url: '/api/v1/configs', headers: { authorization: `Bearer ${viewer.token}` } })).statusCode).toBe(200);

    const list = await s.get<{ items: { id: string; name: string; scopes: string[]; expiresAt: string | null; lastUsedAt: string | null }[] }>('/api/v1/tokens');
    expect(list.items).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ name: 'deployer', scopes: ['operate', 'snapshots'], expiresAt }),
        expect.objectContaining({ id: viewer.id, name: 'viewer', scopes: ['read'], expiresAt: null }),
      ]),
    );
    for (const item of list.items) expect(Object.keys(item)).toEqual(expect.arrayContaining(['lastUsedAt']));
  });

  it('refuses an unknown scope, a repeated scope and an expiry in the past with 400, creating nothing', async () => {
    const before = (await s.get<{ items: unknown[] }>('/api/v1/tokens')).items.length;
    const unknown = await s.call({ method: 'POST', url: '/api/v1/tokens', payload: { name: 'x', scopes: ['read', 'root'] } });
    expect(unknown.statusCode).toBe(400);
    expect(unknown.json().error.message).toMatch(/body\.scopes\.1: unknown scope "root"/);
    const twice = await s.call({ method: 'POST', url: '/api/v1/tokens', payload: { name: 'x', scopes: ['read', 'read'] } });
    expect(twice.statusCode).toBe(400);
    const past = await s.call({ method: 'POST', url: '/api/v1/tokens', payload: { name: 'x', expiresAt: '2001-01-01T00:00:00Z' } });
    expect(past.statusCode).toBe(400);
    expect(past.json().error.message).toMatch(/body\.expiresAt: is in the past/);
    const notATime = await s.call({ method: 'POST', url: '/api/v1/tokens', payload: { name: 'x', expiresAt: 'tomorrow' } });
    expect(notATime.statusCode).toBe(400);
    expect((await s.get<{ items: unknown[] }>('/api/v1/tokens')).items.length).toBe(before);
  });

  it('answers 401 to an expired token and keeps serving a live one', async () => {
    const expired = await storeToken(s, 'old', ['admin'], new Date(Date.now() - 1_000));
    const res = await s.api.inject({ method: 'GET', url: '/api/v1/configs', headers: expired.headers });
    expect(res.statusCode).toBe(401);
    expect(res.json().error).toMatchObject({ code: 'UNAUTHORIZED', message: expect.stringMatching(/"old" expired at/) });
    const live = await storeToken(s, 'new', ['read'], new Date(Date.now() + 60_000));
    expect((await s.api.inject({ method: 'GET', url: '/api/v1/configs', headers: live.headers })).statusCode).toBe(200);
  });

  it('refuses a token without admin the token list and token creation', async () => {
    const reader = await storeToken(s, 'reader', ['read', 'operate', 'credentials', 'snapshots']);
    const list = await s.api.inject({ method: 'GET', url: '/api/v1/tokens', headers: reader.headers });
    expect(list.statusCode).toBe(403);
    expect(list.json()).toEqual(forbiddenBody('reader', 'admin'));
    const mint = await s.api.inject({ method: 'POST', url: '/api/v1/tokens', headers: reader.headers, payload: { name: 'escalate', scopes: ['admin'] } });
    expect(mint.statusCode).toBe(403);
  });
});
