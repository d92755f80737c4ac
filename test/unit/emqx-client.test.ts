import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { EmqxClient, EmqxError, type EmqxClientConfig, type EmqxHashedUser } from '../../src/broker/emqx-client.js';
import { AuthorizationVerdicts, checkAuthorization, judgeAuthorization } from '../../src/broker/authorization.js';
import {
  hashPassword,
  SECURE_AUTHORIZATION,
  startEmqxDouble,
  STOCK_EMQX_AUTHORIZATION,
  type EmqxDouble,
} from '../support/emqx-double.js';

let emqx: EmqxDouble;

beforeAll(async () => {
  emqx = await startEmqxDouble();
});

afterAll(async () => {
  await emqx.close();
});

beforeEach(() => {
  emqx.reset();
});

/** Fast backoff so that retry tests take milliseconds. */
function clientFor(double: EmqxDouble, over: Partial<EmqxClientConfig> = {}): EmqxClient {
  return new EmqxClient({
    baseUrl: double.url,
    apiKey: double.apiKey,
    apiSecret: double.apiSecret,
    timeoutMs: 2000,
    retries: 2,
    minBackoffMs: 5,
    maxBackoffMs: 20,
    ...over,
  });
}

const hashed = (userId: string, password: string, salt = `salt-${userId}`): EmqxHashedUser => ({
  user_id: userId,
  password_hash: hashPassword(salt, password),
  salt,
});

async function rejection(p: Promise<unknown>): Promise<EmqxError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(EmqxError);
  return err as EmqxError;
}

const countOf = (double: EmqxDouble, method: string, pathPart: string) =>
  double.requests.filter((r) => r.method === method && r.path.includes(pathPart)).length;

describe('EmqxClient', () => {
  it('reports wrong API credentials as a non-retryable BAD_API_KEY_OR_SECRET, after one request', async () => {
    const client = clientFor(emqx, { apiSecret: 'wrong' });
    const err = await rejection(client.listUsers());
    expect(err).toMatchObject({ code: 'BAD_API_KEY_OR_SECRET', status: 401, retryable: false });
    expect(emqx.requests).toHaveLength(1);
  });

  it('pages through imported users following meta.hasnext', async () => {
    const client = clientFor(emqx);
    const users = Array.from({ length: 25 }, (_, i) => hashed(`node-${String(i).padStart(2, '0')}`, `pw${i}`));
    const result = await client.importUsersHash(users);
    expect(result).toEqual({ total: 25, success: 25, override: 0, skipped: 0, failed: 0 });

    const first = await client.listUsers(1, 10);
    expect(first.meta).toMatchObject({ page: 1, limit: 10, hasnext: true });
    expect(first.data[0]).toEqual({ user_id: 'node-00', is_superuser: false });
    const last = await client.listUsers(3, 10);
    expect(last.meta.hasnext).toBe(false);
    expect(last.data).toHaveLength(5);

    emqx.requests.length = 0;
    const all = [];
    for await (const u of client.allUsers(10)) all.push(u.user_id);
    expect(all).toEqual(users.map((u) => u.user_id));
    expect(countOf(emqx, 'GET', '/users')).toBe(3);
  });

  it('stores imported hashes as given, so EMQX checks the password meshq hashed', async () => {
    const client = clientFor(emqx);
    await client.importUsersHash([hashed('node-a', 'secret-a', 'abc')]);
    const stored = emqx.users.get('node-a');
    expect(stored).toEqual({
      user_id: 'node-a',
      password_hash: hashPassword('abc', 'secret-a'),
      salt: 'abc',
      is_superuser: false,
    });
    expect(stored?.password_hash).toMatch(/^[0-9a-f]{64}$/);
  });

  it('overwrites existing users on import and counts changed and identical ones apart', async () => {
    const client = clientFor(emqx);
    await client.importUsersHash([hashed('node-a', 'old'), hashed('node-b', 'same')]);
    const result = await client.importUsersHash([hashed('node-a', 'new'), hashed('node-b', 'same'), hashed('node-c', 'c')]);
    expect(result).toEqual({ total: 3, success: 1, override: 1, skipped: 1, failed: 0 });
    expect(emqx.users.get('node-a')?.password_hash).toBe(hashPassword('salt-node-a', 'new'));
    expect(emqx.users.size).toBe(3);
  });

  it('treats an empty import as nothing to do without calling EMQX', async () => {
    const result = await clientFor(emqx).importUsersHash([]);
    expect(result).toEqual({ total: 0, success: 0, override: 0, skipped: 0, failed: 0 });
    expect(emqx.requests).toHaveLength(0);
  });

  it('writes nothing when creating rules conflicts with a user that already has rules', async () => {
    const client = clientFor(emqx);
    const rule = { topic: 'meshq/c1/a/#', permission: 'allow', action: 'all' } as const;
    await client.createRules([{ username: 'node-a', rules: [rule] }]);

    const err = await rejection(
      client.createRules([
        { username: 'node-b', rules: [rule] },
        { username: 'node-a', rules: [] },
      ]),
    );
    expect(err).toMatchObject({ code: 'ALREADY_EXISTS', status: 409, retryable: false });
    expect(emqx.rules.has('node-b')).toBe(false);
    expect(emqx.rules.get('node-a')).toHaveLength(1);
    expect(countOf(emqx, 'POST', '/rules/users')).toBe(2);
  });

  it('upserts rules with replaceRules and reads them back with EMQX defaults filled in', async () => {
    const client = clientFor(emqx);
    await client.replaceRules('node-a', [{ topic: 'meshq/c1/a/#', permission: 'allow', action: 'publish' }]);
    await client.replaceRules('node-a', [
      { topic: 'meshq/c1/a/#', permission: 'allow', action: 'all' },
      { topic: '#', permission: 'deny', action: 'all', qos: [1] },
    ]);
    await client.replaceRules('node-b', []);

    const page = await client.listRules(1, 100);
    expect(page.data).toEqual([
      {
        username: 'node-a',
        rules: [
          { topic: 'meshq/c1/a/#', permission: 'allow', action: 'all', qos: [0, 1, 2], retain: 'all' },
          { topic: '#', permission: 'deny', action: 'all', qos: [1], retain: 'all' },
        ],
      },
      { username: 'node-b', rules: [] },
    ]);
    const all = [];
    for await (const r of client.allRules(1)) all.push(r.username);
    expect(all).toEqual(['node-a', 'node-b']);
  });

  it('rejects rule sets over the rule limit with BAD_REQUEST', async () => {
    const rules = Array.from({ length: 101 }, (_, i) => ({ topic: `t/${i}`, permission: 'allow', action: 'all' }) as const);
    const err = await rejection(clientFor(emqx).replaceRules('node-a', rules));
    expect(err).toMatchObject({ code: 'BAD_REQUEST', status: 400, retryable: false });
    expect(emqx.rules.size).toBe(0);
  });

  it('treats deleting a missing user or rule set as already done', async () => {
    const client = clientFor(emqx);
    await client.importUsersHash([hashed('node-a', 'pw')]);
    await client.replaceRules('node-a', []);

    expect(await client.deleteUser('node-a')).toBe(true);
    expect(await client.deleteUser('node-a')).toBe(false);
    expect(await client.deleteRules('node-a')).toBe(true);
    expect(await client.deleteRules('node-a')).toBe(false);
    expect(emqx.users.size).toBe(0);
  });

  it('kicks connected clients and treats a client that is not connected as already gone', async () => {
    const client = clientFor(emqx);
    emqx.connected.add('node-a');
    emqx.connected.add('node x/y');
    emqx.connected.add('node-c');

    expect(await client.kickClient('node-a')).toBe(true);
    expect(await client.kickClient('node-a')).toBe(false);
    await client.kickClients(['node x/y', 'never-connected', 'node-c']);
    expect(emqx.kicked).toEqual(['node-a', 'node x/y', 'node-c']);
    expect(emqx.connected.size).toBe(0);
  });

  it('retries a 503 with backoff and succeeds once EMQX recovers', async () => {
    let failures = 0;
    const logger = {
      warn: () => {
        // The fault clears while the client is still retrying.
        if (++failures === 2) emqx.setFault('none');
      },
      debug: () => undefined,
    };
    const client = clientFor(emqx, { retries: 5, logger });
    emqx.setFault('503');
    const result = await client.importUsersHash([hashed('node-a', 'pw')]);
    expect(result.success).toBe(1);
    expect(failures).toBe(2);
    expect(emqx.requests).toHaveLength(3);
  });

  it('gives up on a persistent 503 with a retryable error carrying the status', async () => {
    emqx.setFault('503');
    const err = await rejection(clientFor(emqx, { retries: 2 }).listUsers());
    expect(err).toMatchObject({ code: 'SERVICE_UNAVAILABLE', status: 503, retryable: true });
    expect(emqx.requests).toHaveLength(3);
  });

  it('reports a refused connection as a retryable UNREACHABLE and works again when EMQX is back', async () => {
    const client = clientFor(emqx, { retries: 1 });
    emqx.setFault('down');
    await emqx.settled();
    const err = await rejection(client.listUsers());
    expect(err).toMatchObject({ code: 'UNREACHABLE', retryable: true });
    expect(err.status).toBeUndefined();
    expect(err.message).toContain('ECONNREFUSED');
    expect(emqx.requests).toHaveLength(0);

    emqx.setFault('none');
    await emqx.settled();
    expect((await client.listUsers()).data).toEqual([]);
  });

  it('gives up with TIMEOUT when EMQX answers slower than timeoutMs', async () => {
    emqx.setFault('slow', { delayMs: 500 });
    const client = clientFor(emqx, { timeoutMs: 100, retries: 1 });
    const started = Date.now();
    const err = await rejection(client.importUsersHash([hashed('node-a', 'pw')]));
    expect(err).toMatchObject({ code: 'TIMEOUT', retryable: true });
    expect(emqx.requests).toHaveLength(2);
    expect(Date.now() - started).toBeLessThan(500);
    // The double drops work whose client went away, so nothing was imported.
    await new Promise((r) => setTimeout(r, 550));
    expect(emqx.users.size).toBe(0);
  });

  it('answers within timeoutMs when EMQX is slow but not too slow', async () => {
    emqx.setFault('slow', { delayMs: 50 });
    const result = await clientFor(emqx, { timeoutMs: 1000 }).importUsersHash([hashed('node-a', 'pw')]);
    expect(result.success).toBe(1);
  });

  it('retries a connection dropped without an answer', async () => {
    emqx.setFault('drop');
    const err = await rejection(clientFor(emqx, { retries: 2 }).listUsers());
    expect(err).toMatchObject({ code: 'UNREACHABLE', retryable: true });
    expect(emqx.requests).toHaveLength(3);
  });

  it('never retries a 4xx', async () => {
    emqx.setFault('401');
    const err = await rejection(clientFor(emqx, { retries: 5 }).kickClients(['a']));
    expect(err).toMatchObject({ code: 'BAD_API_KEY_OR_SECRET', retryable: false });
    expect(emqx.requests).toHaveLength(1);
  });

  it('keeps the API secret out of errors, logs and the client object', async () => {
    const lines: string[] = [];
    const logger = {
      warn: (...args: unknown[]) => void lines.push(JSON.stringify(args)),
      debug: (...args: unknown[]) => void lines.push(JSON.stringify(args)),
    };
    const client = clientFor(emqx, { logger, retries: 1 });
    await client.listUsers();
    emqx.setFault('503');
    const err = await rejection(client.listUsers());
    const authorization = Buffer.from(`${emqx.apiKey}:${emqx.apiSecret}`).toString('base64');
    const seen = [...lines, err.message, String(err.stack), JSON.stringify(client), (await import('node:util')).inspect(client)];
    expect(lines.length).toBeGreaterThan(0);
    for (const text of seen) {
      expect(text).not.toContain(emqx.apiSecret);
      expect(text).not.toContain(authorization);
    }
  });

  it('reads the health endpoint without credentials', async () => {
    const client = clientFor(emqx, { apiSecret: 'wrong' });
    expect(await client.status()).toEqual({ running: true, nodeName: 'emqx@127.0.0.1', version: '5.8.9' });
    emqx.setFault('503');
    expect(await client.status()).toEqual({ running: false });
    expect(emqx.requests).toHaveLength(2);
  });

  describe('against an EMQX without the built-in database configured', () => {
    let bare: EmqxDouble;
    beforeAll(async () => {
      bare = await startEmqxDouble({ authenticatorConfigured: false, authzConfigured: false });
    });
    afterAll(async () => {
      await bare.close();
    });

    it('reports the missing authenticator as NOT_FOUND, also on delete', async () => {
      const client = clientFor(bare);
      expect(await rejection(client.listUsers())).toMatchObject({ code: 'NOT_FOUND', status: 404, retryable: false });
      expect(await rejection(client.deleteUser('node-a'))).toMatchObject({ code: 'NOT_FOUND' });
      expect(await rejection(client.importUsersHash([hashed('node-a', 'pw')]))).toMatchObject({ code: 'NOT_FOUND' });
    });

    it('reports the missing authorization source as NOT_FOUND, also on delete', async () => {
      const client = clientFor(bare);
      expect(await rejection(client.listRules())).toMatchObject({ code: 'NOT_FOUND', status: 404 });
      expect(await rejection(client.deleteRules('node-a'))).toMatchObject({ code: 'NOT_FOUND' });
    });
  });
});

// ---------------------------------------------------------------------------------------
// The double itself, called directly: these pin the EMQX behaviour the double claims (its header comment).

interface RawAnswer {
  status: number;
  body: unknown;
  headers: Headers;
}

async function raw(
  method: string,
  path: string,
  opts: { body?: unknown; auth?: string | false; contentType?: string } = {},
): Promise<RawAnswer> {
  const headers: Record<string, string> = {};
  if (opts.auth !== false) {
    headers.authorization = opts.auth ?? `Basic ${Buffer.from(`${emqx.apiKey}:${emqx.apiSecret}`).toString('base64')}`;
  }
  if (opts.body !== undefined) headers['content-type'] = opts.contentType ?? 'application/json';
  const res = await fetch(`${emqx.url}${path}`, {
    method,
    headers,
    ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // text stays text
  }
  return { status: res.status, body, headers: res.headers };
}

const USERS = '/authentication/password_based:built_in_database/users';
const RULES = '/authorization/sources/built_in_database/rules/users';

describe('EMQX double contract', () => {
  it('rejects a page limit over 10000 and non-positive paging with INVALID_PARAMETER', async () => {
    for (const qs of ['limit=10001', 'page=0', 'limit=abc', 'limit=0']) {
      const users = await raw('GET', `${USERS}?${qs}`);
      expect(users).toMatchObject({ status: 400, body: { code: 'INVALID_PARAMETER' } });
      const rules = await raw('GET', `${RULES}?${qs}`);
      expect(rules).toMatchObject({ status: 400, body: { code: 'INVALID_PARAMETER' } });
    }
    expect((await raw('GET', `${USERS}?limit=10000`)).status).toBe(200);
  });

  it('accepts %3A for the colon of the authenticator id', async () => {
    const res = await raw('POST', '/authentication/password_based%3Abuilt_in_database/users', {
      body: { user_id: 'u1', password: 'p' },
    });
    expect(res).toMatchObject({ status: 201, body: { user_id: 'u1', is_superuser: false } });
  });

  it('distinguishes a missing Authorization header from wrong credentials, and leaves /status open', async () => {
    expect(await raw('GET', USERS, { auth: false })).toMatchObject({ status: 401, body: { code: 'AUTHORIZATION_HEADER_ERROR' } });
    expect(await raw('GET', USERS, { auth: 'Basic ' + Buffer.from('k:s').toString('base64') })).toMatchObject({
      status: 401,
      body: { code: 'BAD_API_KEY_OR_SECRET' },
    });
    const status = await raw('GET', '/status', { auth: false });
    expect(status.status).toBe(200);
    expect(status.body).toContain('is running');
  });

  it('creates users with a salted sha256 hash and never returns the password', async () => {
    const created = await raw('POST', USERS, { body: { user_id: 'u1', password: 'pw', is_superuser: true } });
    expect(created).toEqual(expect.objectContaining({ status: 201, body: { user_id: 'u1', is_superuser: true } }));
    const stored = emqx.users.get('u1')!;
    expect(stored.password_hash).toBe(hashPassword(stored.salt, 'pw'));
    expect(stored.salt).not.toBe('');

    expect(await raw('POST', USERS, { body: { user_id: 'u1', password: 'pw' } })).toMatchObject({
      status: 409,
      body: { code: 'ALREADY_EXISTS' },
    });
    for (const body of [{ user_id: 'u2', password: 'p', extra: 1 }, { user_id: '', password: 'p' }, { user_id: 'u3' }]) {
      expect(await raw('POST', USERS, { body })).toMatchObject({ status: 400, body: { code: 'BAD_REQUEST' } });
    }
    expect(await raw('GET', `${USERS}/u1`)).toMatchObject({ status: 200, body: { user_id: 'u1', is_superuser: true } });
    expect(await raw('GET', `${USERS}/nobody`)).toMatchObject({ status: 404, body: { code: 'NOT_FOUND' } });
  });

  it('updates users with PUT but refuses a user_id in the body', async () => {
    await raw('POST', USERS, { body: { user_id: 'u1', password: 'pw' } });
    const before = emqx.users.get('u1')!;
    expect(await raw('PUT', `${USERS}/u1`, { body: { password: 'new', is_superuser: true } })).toMatchObject({
      status: 200,
      body: { user_id: 'u1', is_superuser: true },
    });
    expect(emqx.users.get('u1')!.password_hash).not.toBe(before.password_hash);
    expect(await raw('PUT', `${USERS}/u1`, { body: { user_id: 'u1', password: 'x' } })).toMatchObject({ status: 400 });
    expect(await raw('PUT', `${USERS}/nobody`, { body: { password: 'x' } })).toMatchObject({ status: 404 });
    expect((await raw('DELETE', `${USERS}/u1`)).status).toBe(204);
    expect((await raw('DELETE', `${USERS}/u1`)).status).toBe(404);
  });

  it('imports plain passwords by hashing them, and rejects empty or incomplete lists', async () => {
    const res = await raw('POST', '/authentication/password_based:built_in_database/import_users?type=plain', {
      body: [{ user_id: 'p1', password: 'pw', is_superuser: true }],
    });
    expect(res).toMatchObject({ status: 200, body: { total: 1, success: 1 } });
    const p1 = emqx.users.get('p1')!;
    expect(p1).toMatchObject({ is_superuser: true, password_hash: hashPassword(p1.salt, 'pw') });

    const path = '/authentication/password_based:built_in_database/import_users';
    expect(await raw('POST', path, { body: [] })).toMatchObject({ status: 400, body: { code: 'BAD_REQUEST' } });
    // One bad entry fails the whole transaction.
    expect(
      await raw('POST', `${path}?type=hash`, { body: [{ user_id: 'h1', password_hash: 'x', salt: 's' }, { user_id: 'h2' }] }),
    ).toMatchObject({ status: 400, body: { code: 'BAD_REQUEST' } });
    expect(emqx.users.has('h1')).toBe(false);
    // Without a JSON content type EMQX expects a multipart file.
    expect(await raw('POST', path, { body: [{ user_id: 'h1', password_hash: 'x' }], contentType: 'text/plain' })).toMatchObject({
      status: 400,
    });
  });

  it('serves one user rules with GET, 404 when absent, and enforces the per-user limit on create', async () => {
    expect(await raw('GET', `${RULES}/a`)).toMatchObject({ status: 404, body: { code: 'NOT_FOUND' } });
    const tooMany = Array.from({ length: 101 }, (_, i) => ({ topic: `t/${i}`, permission: 'allow', action: 'all' }));
    expect(await raw('POST', RULES, { body: [{ username: 'a', rules: tooMany }] })).toMatchObject({ status: 400 });
    expect(await raw('POST', RULES, { body: [{ username: 'a', rules: [{ topic: 't', permission: 'maybe', action: 'all' }] }] })).toMatchObject({
      status: 400,
    });
    expect((await raw('POST', RULES, { body: [{ username: 'a', rules: tooMany.slice(0, 100) }] })).status).toBe(204);
    const one = await raw('GET', `${RULES}/a`);
    expect(one.status).toBe(200);
    expect((one.body as { rules: unknown[] }).rules).toHaveLength(100);
    expect(await raw('PUT', `${RULES}/a`, { body: { username: 'b', rules: [] } })).toMatchObject({ status: 400 });
  });

  it('filters lists with like_user_id and like_username, reporting count only when unfiltered', async () => {
    for (const id of ['node-1', 'node-2', 'admin']) await raw('POST', USERS, { body: { user_id: id, password: 'p' } });
    const filtered = await raw('GET', `${USERS}?like_user_id=node`);
    expect(filtered.body).toEqual({
      data: [
        { user_id: 'node-1', is_superuser: false },
        { user_id: 'node-2', is_superuser: false },
      ],
      meta: { page: 1, limit: 100, hasnext: false },
    });
    expect((await raw('GET', USERS)).body).toMatchObject({ meta: { count: 3 } });
    await raw('POST', RULES, { body: [{ username: 'node-1', rules: [] }, { username: 'x', rules: [] }] });
    expect((await raw('GET', `${RULES}?like_username=node`)).body).toMatchObject({ data: [{ username: 'node-1' }] });
  });

  it('answers 404 for unknown routes and other authenticators', async () => {
    expect((await raw('GET', '/nothing/here')).status).toBe(404);
    expect(await raw('GET', '/authentication/password_based:mysql/users')).toMatchObject({ status: 404, body: { code: 'NOT_FOUND' } });
    expect((await raw('DELETE', '/clients/not-connected')).body).toMatchObject({ code: 'CLIENTID_NOT_FOUND' });
  });

  it('records requests and counts writes', async () => {
    await raw('GET', USERS);
    await raw('POST', USERS, { body: { user_id: 'u', password: 'p' } });
    await raw('DELETE', '/clients/x');
    expect(emqx.writeRequests()).toBe(2);
    expect(emqx.requests[0]).toEqual({ method: 'GET', path: `/api/v5${USERS}`, query: {} });
  });

  it('answers 503 with retry-after under the 503 fault', async () => {
    emqx.setFault('503');
    const res = await raw('GET', '/status', { auth: false });
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    expect(res.body).toMatchObject({ code: expect.any(String), message: expect.any(String) });
  });
});

describe('EMQX authorization check', () => {
  const builtIn = { type: 'built_in_database', enable: true };

  it('reads the settings and the sources in order from the double, secure by default', async () => {
    const client = clientFor(emqx);
    expect(await client.authorizationSettings()).toEqual({ noMatch: 'deny' });
    expect(await client.authorizationSources()).toEqual([builtIn]);
    expect(await checkAuthorization(client)).toEqual({ ok: true });
  });

  it('finds stock EMQX insecure: it allows by default', async () => {
    emqx.setAuthorization(STOCK_EMQX_AUTHORIZATION);
    const verdict = await checkAuthorization(clientFor(emqx));
    expect(verdict).toEqual({ ok: false, reason: expect.stringContaining('no_match = "allow"') });
  });

  it.each([
    ['a file source first', [{ type: 'file', enable: true }, builtIn], '"file" is consulted before'],
    ['an HTTP source first', [{ type: 'http', enable: true }, builtIn], '"http" is consulted before'],
    ['the built-in source disabled', [{ ...builtIn, enable: false }], 'not enabled'],
    ['no source at all', [], 'not enabled'],
  ])('finds deny-by-default insecure with %s', (_label, sources, reason) => {
    expect(judgeAuthorization({ noMatch: 'deny' }, sources)).toEqual({ ok: false, reason: expect.stringContaining(reason) });
  });

  it('accepts disabled sources before the built-in one, and any after it', () => {
    const sources = [{ type: 'file', enable: false }, builtIn, { type: 'http', enable: true }];
    expect(judgeAuthorization({ noMatch: 'deny' }, sources)).toEqual({ ok: true });
  });

  it('remembers a good verdict for its lifetime only, and never a bad one', async () => {
    const verdicts = new AuthorizationVerdicts(60_000);
    const client = () => clientFor(emqx);
    const asks = () => countOf(emqx, 'GET', '/authorization/settings');
    expect(await verdicts.verdict(emqx.url, client, 0)).toEqual({ ok: true });
    expect(await verdicts.verdict(emqx.url, client, 59_999)).toEqual({ ok: true });
    expect(asks()).toBe(1);
    emqx.setAuthorization(STOCK_EMQX_AUTHORIZATION);
    // Still cached: EMQX turned insecure is noticed once the good verdict expires.
    expect(await verdicts.verdict(emqx.url, client, 59_999)).toEqual({ ok: true });
    expect((await verdicts.verdict(emqx.url, client, 60_000)).ok).toBe(false);
    expect((await verdicts.verdict(emqx.url, client, 60_001)).ok).toBe(false);
    expect(asks()).toBe(3);
    // Fixed: the next push sees it at once.
    emqx.setAuthorization(SECURE_AUTHORIZATION);
    expect(await verdicts.verdict(emqx.url, client, 60_002)).toEqual({ ok: true });
  });

  it('propagates EMQX failures instead of judging', async () => {
    emqx.setFault('401');
    const err = await rejection(checkAuthorization(clientFor(emqx)));
    expect(err.code).toBe('BAD_API_KEY_OR_SECRET');
  });
});
