/**
 * The API's edges against a hostile caller: the dashboard cannot do what the API guards,
 * browsers cannot be steered into unsafe requests from another site, every answer carries
 * security headers, failed logins are throttled before any password hashing while the
 * API keeps answering, a changed password works at once, readiness names the component
 * that is down without its error text, and no credential reaches the log.
 *
 * SQLite only: nothing here reads or writes business data in a dialect-specific way
 * (authentication reads one administrator or token row; the queues are Redis).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InjectOptions } from 'fastify';
import { DEFAULT_AUTH_LIMITS } from '../../src/api/auth.js';
import { setAdminPassword } from '../../src/repositories/admin-account.js';
import { QUEUES } from '../../src/jobs/names.js';
import { hashToken } from '../../src/domain/secrets.js';
import { newId } from '../../src/domain/ids.js';
import { createRepositories } from '../../src/repositories/index.js';
import { basic, memorySink, startStack, type Stack } from '../support/stack.js';

const ADMIN_PASSWORD = 'api-security-admin-pw';
const BOARD = '/admin/queues/api';

describe('API security edges (sqlite)', () => {
  let s: Stack;
  let logs = '';
  let readerToken = '';
  const reader = () => ({ authorization: `Bearer ${readerToken}` });

  beforeAll(async () => {
    s = await startStack('sqlite', 'api-security', { adminPassword: ADMIN_PASSWORD, logDestination: memorySink((t) => (logs += t)), env: { LOG_LEVEL: 'debug' } });
    const id = newId();
    readerToken = `mq_reader_${id}`;
    await s.app.uow.write(async (em) => {
      createRepositories(em, { serverKey: s.app.serverKey }).tokens.create({ id, name: 'reader', tokenHash: hashToken(readerToken), scopes: ['read'] });
    });
  });

  afterAll(async () => {
    await s?.stop();
  });

  const anon = (opts: InjectOptions) => s.api.inject(opts);

  describe('Bull Board', () => {
    it('refuses, even to the administrator, every write that bypasses the API; the queues serve afterwards', async () => {
      const done = await s.job('config.create', { name: 'board-check', subnet: '10.77.0.0/24' });
      expect(done.state).toBe('completed');
      const q = QUEUES.operations;
      const refused: [InjectOptions['method'], string, unknown?][] = [
        ['POST', `${BOARD}/queues/${q}/add`, { name: 'token.create', data: { actor: 'admin', payload: {} } }],
        ['PATCH', `${BOARD}/queues/${q}/${done.id}/update-data`, { data: { actor: 'admin' } }],
        ['PUT', `${BOARD}/queues/${q}/pause`],
        ['PUT', `${BOARD}/queues/${q}/resume`],
        ['PUT', `${BOARD}/queues/pause`],
        ['PUT', `${BOARD}/queues/resume`],
        ['PUT', `${BOARD}/queues/${q}/empty`],
        ['PUT', `${BOARD}/queues/${q}/obliterate`, {}],
        ['PUT', `${BOARD}/queues/${QUEUES.snapshotRestore}/concurrency`, { concurrency: 10 }],
        ['PUT', `${BOARD}/queues/${q}/rate-limit`, { max: 1, duration: 1000 }],
        ['PUT', `${BOARD}/queues/${q}/rate-limit/release`],
        ['PUT', `${BOARD}/queues/${q}/job-schedulers/reconcile/remove`],
        ['PATCH', `${BOARD}/queues/${q}/job-schedulers/reconcile`, { pattern: '* * * * *' }],
        ['PUT', `${BOARD}/queues/${q}/job-schedulers/reconcile/run`],
        ['PUT', `${BOARD}/queues/${q}/promote`],
        ['PATCH', `${BOARD}/queues/${q}/${done.id}/priority`, { priority: 1 }],
        ['GET', `${BOARD}/redis/stats`],
      ];
      for (const [method, url, payload] of refused) {
        const res = await s.call({ method, url, ...(payload === undefined ? {} : { payload: payload as object }) });
        expect(res.statusCode, `${method} ${url}: ${res.body}`).toBe(403);
        expect(res.json().error.code).toBe('FORBIDDEN');
      }
      for (const queue of s.app.queues.allQueues()) {
        expect(await queue.isPaused(), queue.name).toBe(false);
        expect(await queue.getGlobalConcurrency(), queue.name).toBe(queue.name === QUEUES.snapshotRestore || queue.name === QUEUES.brokerSync ? 1 : null);
      }
      const list = await s.call({ method: 'GET', url: `${BOARD}/queues?activeQueue=${q}&status=completed` });
      expect(list.statusCode).toBe(200);
      expect(list.json().queues.find((x: { name: string }) => x.name === q).jobs.map((j: { id: string }) => j.id)).toContain(done.id);
      expect((await s.job('config.create', { name: 'board-after', subnet: '10.78.0.0/24' })).state).toBe('completed');
    });

    it('lets the administrator clean finished jobs, and shows a reader a read-only board it cannot write to', async () => {
      const clean = await s.call({ method: 'PUT', url: `${BOARD}/queues/${QUEUES.operations}/clean/completed` });
      expect(clean.statusCode, clean.body).toBeLessThan(300);

      const view = await anon({ method: 'GET', url: `${BOARD}/queues`, headers: reader() });
      expect(view.statusCode).toBe(200);
      for (const queue of view.json().queues as { readOnlyMode: boolean }[]) expect(queue.readOnlyMode).toBe(true);
      expect((await s.call({ method: 'GET', url: `${BOARD}/queues` })).json().queues[0].readOnlyMode).toBe(false);
      const retry = await anon({ method: 'PUT', url: `${BOARD}/queues/${QUEUES.operations}/retry/failed`, headers: reader() });
      expect(retry.statusCode).toBe(403);
      expect(retry.json()).toEqual({ error: { code: 'FORBIDDEN', message: 'token "reader" lacks scope "admin"' } });
    });
  });

  describe('browsers', () => {
    const job = { type: 'config.create', data: { name: 'csrf', subnet: '10.66.0.0/24' } };

    it('refuses a cross-site JSON POST and accepts the same request from a client without browser headers', async () => {
      const crossSite = await s.call({ method: 'POST', url: '/api/v1/jobs', payload: job, headers: { 'sec-fetch-site': 'cross-site', origin: 'https://evil.example' } });
      expect(crossSite.statusCode).toBe(403);
      expect(crossSite.json().error).toMatchObject({ code: 'FORBIDDEN', message: expect.stringMatching(/cross-site POST refused/) });
      const sameSite = await s.call({ method: 'POST', url: '/api/v1/jobs', payload: job, headers: { 'sec-fetch-site': 'same-site' } });
      expect(sameSite.statusCode).toBe(403);
      const foreignOrigin = await s.call({ method: 'POST', url: '/api/v1/jobs', payload: job, headers: { origin: 'http://evil.example' } });
      expect(foreignOrigin.statusCode).toBe(403);

      const script = await s.call({ method: 'POST', url: '/api/v1/jobs', payload: job });
      expect(script.statusCode, script.body).toBe(202);
      const sameOrigin = await s.call({ method: 'POST', url: '/api/v1/jobs', payload: { ...job, data: { ...job.data, name: 'same-origin' } }, headers: { 'sec-fetch-site': 'same-origin', origin: 'http://localhost:80' } });
      expect(sameOrigin.statusCode, sameOrigin.body).toBe(202);
    });

    it('refuses a cross-site multipart restore and lets the same upload without browser headers reach the file check', async () => {
      const boundary = '----meshqtest';
      const body =
        `--${boundary}\r\nContent-Disposition: form-data; name="password"\r\n\r\n${ADMIN_PASSWORD}\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="evil.meshq"\r\nContent-Type: application/octet-stream\r\n\r\nnot a snapshot\r\n` +
        `--${boundary}--\r\n`;
      const headers = { 'content-type': `multipart/form-data; boundary=${boundary}` };
      const crossSite = await s.call({ method: 'POST', url: '/api/v1/snapshots/restore', payload: body, headers: { ...headers, origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' } });
      expect(crossSite.statusCode).toBe(403);
      const script = await s.call({ method: 'POST', url: '/api/v1/snapshots/restore', payload: body, headers });
      expect(script.statusCode, script.body).toBe(400);
    });

    it('sends security headers on Bull Board, the API docs and refusals', async () => {
      const pages = [
        await s.call({ method: 'GET', url: '/admin/queues' }),
        await s.call({ method: 'GET', url: '/docs/' }),
        await s.call({ method: 'GET', url: '/docs/json' }),
        await anon({ method: 'GET', url: '/api/v1/configs' }),
      ];
      expect(pages.map((p) => p.statusCode)).toEqual([200, 200, 200, 401]);
      for (const page of pages) {
        expect(page.headers['x-content-type-options']).toBe('nosniff');
        expect(page.headers['x-frame-options']).toBe('DENY');
        const csp = String(page.headers['content-security-policy']);
        expect(csp).toMatch(/frame-ancestors 'none'/);
        expect(csp).toMatch(/script-src 'self'(;|$)/);
        expect(csp).not.toMatch(/upgrade-insecure-requests/);
      }
      // The pages' own scripts and styles are same-origin, as the policy requires.
      expect(pages[0]!.body).toMatch(/<script defer src="static\/js\//);
      expect(pages[1]!.body).toMatch(/<script src="\.\/swagger-ui-bundle\.js"|<script src="[^"]*swagger-ui-bundle\.js"/);
      expect(pages[1]!.body).not.toMatch(/<script>(?!\s*<\/script>)/);
    });
  });

  describe('logins', () => {
    it('makes a changed administrator password take effect at once', async () => {
      expect((await s.call({ method: 'GET', url: '/api/v1/configs' })).statusCode).toBe(200); // cached now
      await setAdminPassword({ uow: s.app.uow, serverKey: s.app.serverKey }, 'a-new-admin-password');
      expect((await s.call({ method: 'GET', url: '/api/v1/configs' })).statusCode).toBe(401);
      expect((await anon({ method: 'GET', url: '/api/v1/configs', headers: basic('admin', 'a-new-admin-password') })).statusCode).toBe(200);
      await setAdminPassword({ uow: s.app.uow, serverKey: s.app.serverKey }, ADMIN_PASSWORD);
      expect((await s.call({ method: 'GET', url: '/api/v1/configs' })).statusCode).toBe(200);
    });

    it('answers 100 simultaneous bad logins with 429s carrying Retry-After while /healthz stays fast', async () => {
      const timings: number[] = [];
      let hammering = true;
      const probe = (async () => {
        while (hammering) {
          const t0 = performance.now();
          const res = await anon({ method: 'GET', url: '/healthz' });
          timings.push(performance.now() - t0);
          expect(res.statusCode).toBe(200);
          await new Promise((r) => setTimeout(r, 5));
        }
      })();
      const bad = await Promise.all(
        Array.from({ length: 100 }, (_, i) => anon({ method: 'GET', url: '/api/v1/configs', headers: basic('admin', `guess-${i}`) })),
      );
      hammering = false;
      await probe;

      const statuses = bad.map((r) => r.statusCode);
      expect(statuses.every((c) => c === 401 || c === 429 || c === 503), statuses.join(',')).toBe(true);
      const throttled = bad.filter((r) => r.statusCode === 429);
      expect(throttled.length).toBeGreaterThan(0);
      for (const r of [...throttled, ...bad.filter((x) => x.statusCode === 503)]) expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      // Never more wrong guesses checked than the per-client budget (plus those already
      // being checked when it ran out).
      expect(statuses.filter((c) => c === 401).length).toBeLessThanOrEqual(DEFAULT_AUTH_LIMITS.perClient + DEFAULT_AUTH_LIMITS.concurrentVerifications - 1);

      // Still throttled now, before any hashing; the administrator's verified session is not.
      const again = await anon({ method: 'GET', url: '/api/v1/configs', headers: basic('admin', 'one-more') });
      expect(again.statusCode).toBe(429);
      expect((await s.call({ method: 'GET', url: '/api/v1/configs' })).statusCode).toBe(200);

      timings.sort((a, b) => a - b);
      const p99 = timings[Math.min(timings.length - 1, Math.floor(timings.length * 0.99))]!;
      console.log(`healthz during 100 bad logins: ${timings.length} probes, p99 ${p99.toFixed(1)} ms`);
      expect(p99).toBeLessThan(1_000);
    });
  });

  describe('readiness', () => {
    it('names the component that is down to anyone, and its error only to an authenticated reader', async () => {
      const redis = s.app.queues.connection;
      const ping = redis.ping.bind(redis);
      (redis as { ping: unknown }).ping = async () => {
        throw new Error('connect ECONNREFUSED 10.9.8.7:6379');
      };
      try {
        const open = await anon({ method: 'GET', url: '/readyz' });
        expect(open.statusCode).toBe(503);
        expect(open.json()).toMatchObject({ status: 'unavailable', failed: ['redis'], checks: { database: { ok: true }, redis: { ok: false }, migrations: { ok: true } } });
        expect(open.json()).not.toHaveProperty('workers');
        expect(open.body).not.toMatch(/ECONNREFUSED|10\.9\.8\.7/);

        const detailed = await anon({ method: 'GET', url: '/readyz', headers: reader() });
        expect(detailed.statusCode).toBe(503);
        expect(detailed.json().checks.redis).toEqual({ ok: false, error: 'connect ECONNREFUSED 10.9.8.7:6379' });
        expect((await anon({ method: 'GET', url: '/readyz', headers: { authorization: 'Bearer wrong' } })).statusCode).toBe(401);
      } finally {
        (redis as { ping: unknown }).ping = ping;
      }
      expect((await anon({ method: 'GET', url: '/readyz' })).statusCode).toBe(200);
    });
  });

  it('writes no credential to the log', () => {
    expect(logs.length).toBeGreaterThan(0);
    expect(logs).not.toContain(ADMIN_PASSWORD);
    expect(logs).not.toContain('a-new-admin-password');
    expect(logs).not.toContain(basic('admin', ADMIN_PASSWORD).authorization.slice('Basic '.length));
    expect(logs).not.toContain(readerToken);
    expect(logs).not.toMatch(/guess-\d+/);
  });
});
