/**
 * What a snapshot may not carry or bring back:
 * - API tokens are access control, not business data: an export has none, and a restore
 *   neither brings back a revoked token nor removes one created since.
 * - Rows the jobs would refuse: a file with an EMQX username outside node-<nodeId> is a
 *   400 at upload naming table, row and column, and nothing changes.
 * - Settings: what settings.update accepts always exports and restores (it refuses NUL and
 *   runaway nesting at the API, with a message).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_JSON_DEPTH, MAX_SETTING_VALUE_BYTES } from '../../src/domain/json-values.js';
import { deriveFileKey } from '../../src/snapshots/container.js';
import { decodeSnapshot } from '../../src/snapshots/payload.js';
import { DIALECTS } from '../support/db.js';
import { businessRows, encodeTestSnapshot, generateBusinessTables, uploadSnapshot } from '../support/snapshot-data.js';
import { startStack, type JobView, type Stack } from '../support/stack.js';

const ADMIN = 'access-values-admin-password';
const openSnapshot = async (file: Buffer, password: string) => decodeSnapshot(file, await deriveFileKey(file, file.length, password));

const nested = (levels: number): unknown => {
  let v: unknown = 'leaf';
  for (let i = 0; i < levels; i++) v = i % 2 === 0 ? [v] : { k: v };
  return v;
};

async function exportFile(s: Stack): Promise<Buffer> {
  const res = await s.call({ method: 'POST', url: '/api/v1/snapshots/export?wait=30000' });
  expect(res.statusCode, res.body).toBe(200);
  const job = res.json<JobView>();
  expect(job.state, JSON.stringify(job.error)).toBe('completed');
  const { snapshotId } = job.result as { snapshotId: string };
  return (await s.call({ method: 'GET', url: `/api/v1/snapshots/${snapshotId}/download` })).rawPayload;
}

async function restore(s: Stack, file: Buffer): Promise<JobView> {
  const res = await uploadSnapshot(s.api, s.auth, file, ADMIN, '?wait=30000');
  expect(res.statusCode, res.body).toBe(200);
  const job = res.json<JobView>();
  expect(job.state, JSON.stringify(job.error)).toBe('completed');
  return job;
}

describe.each(DIALECTS)('snapshots and access, domain rules and values on %s', (dialect) => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack(dialect, 'snap_access', { adminPassword: ADMIN });
  });
  afterAll(async () => {
    await s?.stop();
  });

  const createToken = async (name: string) => {
    const res = await s.call({ method: 'POST', url: '/api/v1/tokens?wait=20000', payload: { name } });
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json<{ id: string; token: string }>();
    return { id: body.id, bearer: { authorization: `Bearer ${body.token}` } };
  };
  const statusWith = async (bearer: Record<string, string>) =>
    (await s.api.inject({ method: 'GET', url: '/api/v1/configs', headers: bearer })).statusCode;

  it('keeps a revoked token revoked and a newer token working across a restore of an older export', async () => {
    expect((await s.job('config.create', { name: 'office', subnet: '10.60.0.0/24' })).state).toBe('completed');
    const a = await createToken('token-a');
    expect(await statusWith(a.bearer)).toBe(200);

    const file = await exportFile(s);
    const payload = await openSnapshot(file, ADMIN);
    expect(Object.keys(payload.tables)).not.toContain('api_token');
    expect(Object.keys(payload.counts)).not.toContain('api_token');

    expect((await s.job('token.revoke', { id: a.id })).state).toBe('completed');
    expect(await statusWith(a.bearer)).toBe(401);
    const b = await createToken('token-b');
    expect(await statusWith(b.bearer)).toBe(200);

    await restore(s, file);
    expect(await statusWith(a.bearer)).toBe(401);
    expect(await statusWith(b.bearer)).toBe(200);
    const tokens = await s.get<{ items: { name: string }[] }>('/api/v1/tokens');
    expect(tokens.items.map((t) => t.name)).toEqual(['token-b']);
    // The business data did come back.
    expect((await s.get<{ items: { name: string }[] }>('/api/v1/configs')).items.map((c) => c.name)).toEqual(['office']);
  });

  it('restores an older file with api_token rows, ignoring them', async () => {
    const tables = generateBusinessTables({ configs: 1, nodesPerConfig: 3, tokens: 2, label: 'older', serverKey: s.app.serverKey });
    const current = await createToken('still-here');
    await restore(s, await encodeTestSnapshot(tables, ADMIN));
    expect(await statusWith(current.bearer)).toBe(200);
    const tokens = await s.get<{ items: { name: string }[] }>('/api/v1/tokens');
    expect(tokens.items.map((t) => t.name).sort()).toEqual(['still-here', 'token-b']);
    expect((await businessRows(s.app)).node).toHaveLength(3);
  });

  it('refuses a file whose credential names an EMQX user outside node-<nodeId>, changing nothing', async () => {
    const before = await businessRows(s.app);
    const tables = generateBusinessTables({ configs: 1, nodesPerConfig: 4, label: 'hostile', serverKey: s.app.serverKey });
    tables.mqtt_credential![0]!.username = 'admin';
    const res = await uploadSnapshot(s.api, s.auth, await encodeTestSnapshot(tables, ADMIN), ADMIN);
    expect(res.statusCode, res.body).toBe(400);
    expect(res.json<{ error: { message: string } }>().error.message).toMatch(
      /table mqtt_credential row 1 \(id [0-9a-f-]{36}\): column username: must be "node-" followed by node_id/,
    );
    expect(await businessRows(s.app)).toEqual(before);
  });

  it('refuses settings with a NUL character or nested 1000 deep at POST /api/v1/jobs, saying where', async () => {
    const submit = (values: Record<string, unknown>) =>
      s.call({ method: 'POST', url: '/api/v1/jobs', payload: { type: 'settings.update', data: { values } } });
    const nul = await submit({ 'ui.theme': { name: 'da\u0000rk' } });
    expect(nul.statusCode, nul.body).toBe(400);
    expect(nul.json<{ error: { code: string; message: string } }>().error).toMatchObject({ code: 'INVALID', message: expect.stringMatching(/ui\.theme.*name.*NUL character/) });
    const nulKey = await submit({ ok: { 'k\u0000': 1 } });
    expect(nulKey.statusCode, nulKey.body).toBe(400);
    expect(nulKey.json<{ error: { message: string } }>().error.message).toMatch(/key "k\\u0000" contains a NUL character/);
    const deep = await submit({ deep: nested(1000) });
    expect(deep.statusCode, deep.body).toBe(400);
    expect(deep.json<{ error: { message: string } }>().error.message).toMatch(new RegExp(`deep.*nested more than ${MAX_JSON_DEPTH} levels deep`));
    expect((await s.get<{ items: unknown[] }>('/api/v1/settings')).items.filter((i) => JSON.stringify(i).includes('"deep"'))).toEqual([]);
  });

  it('exports and restores every settings write it accepted: unicode, deep and large values', async () => {
    const values = {
      'v.unicode': { 'Zürich ↔ 東京': ['🛰️', '\u0001\u001f', 'tab\tnew\nline', 'é'] },
      'v.deep': nested(MAX_JSON_DEPTH),
      // The largest value allowed, in two-byte characters.
      'v.large': 'é'.repeat(MAX_SETTING_VALUE_BYTES / 2 - 1),
      'v.numbers': [0.1 + 0.2, -0, 1e300, 2 ** 53 + 2],
    };
    expect((await s.job('settings.update', { values })).state).toBe('completed');
    const before = await businessRows(s.app);
    const file = await exportFile(s);
    expect((await s.job('settings.update', { values: { 'v.unicode': null, 'v.deep': 'changed' } })).state).toBe('completed');
    await restore(s, file);
    expect(await businessRows(s.app)).toEqual(before);
    const settings = new Map(before.setting!.map((r) => [r.key, r.value]));
    expect(settings.get('v.deep')).toEqual(values['v.deep']);
    expect(settings.get('v.large')).toBe(values['v.large']);
    expect(settings.get('v.unicode')).toEqual(values['v.unicode']);
  });
});
