/**
 * What a snapshot may not carry or bring back:
 * - API tokens are access control, not business data: an export has none, and a restore
 *   neither brings back a revoked token nor removes one created since.
 * - Rows the jobs would refuse: a file with an EMQX username outside node-<nodeId> is a
 *   400 at upload naming table, row and column, and nothing changes.
 * - Settings: what settings.update accepts always exports and restores (it refuses NUL and
 *   runaway nesting at the API, with a message).
 * - JSON that no meshq writes but JSON allows (escapes of every kind, keys in any order,
 *   duplicate keys, numbers in exponent form, date-times at every precision the check
 *   accepts) restores as JSON.parse reads it, on both dialects. On PostgreSQL the rows of
 *   an upload the API checked go from the file's bytes straight to COPY text
 *   (JsonRowsToCopy, src/snapshots/pg-copy-text.ts), without JSON.parse: this is where
 *   that path meets a real database.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gzipSync } from 'node:zlib';
import { deriveKey, newKdfParams } from '../../src/crypto.js';
import { LATEST_SCHEMA_VERSION } from '../../src/migrations/index.js';
import { createRepositories } from '../../src/repositories/index.js';
import { encryptSnapshotBody } from '../../src/snapshots/container.js';
import type { SnapshotRow, SnapshotTables, TableSpec } from '../../src/snapshots/tables.js';
import { MAX_JSON_DEPTH, MAX_SETTING_VALUE_BYTES } from '../../src/domain/json-values.js';
import { deriveFileKey } from '../../src/snapshots/container.js';
import { decodeSnapshot } from '../../src/snapshots/payload.js';
import { DIALECTS } from '../support/db.js';
import { businessRows, encodeTestSnapshot, generateBusinessTables, sortedByKey, TEST_KDF, uploadSnapshot } from '../support/snapshot-data.js';
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

/**
 * A snapshot file whose JSON text is written by hand, not by JSON.stringify: the `odd` rows
 * are text, appended to their table after the `plain` rows. Those are written as
 * JSON.stringify writes them: they are not what this is about, and node rows need keys
 * sealed under the server key.
 */
async function handWrittenFile(plain: SnapshotTables, odd: Record<string, string[]>, password: string): Promise<{ file: Buffer; text: string }> {
  const tables = Object.keys(plain).map((t) => `"${t}" : [ ${[...plain[t]!.map((r) => JSON.stringify(r)), ...(odd[t] ?? [])].join(' ,\n')} ]`);
  const counts = Object.fromEntries(Object.keys(plain).map((t) => [t, plain[t]!.length + (odd[t]?.length ?? 0)]));
  const text = `{"formatVersion":1,"schemaVersion":"${LATEST_SCHEMA_VERSION}","appVersion":"0.1.0","createdAt":"${new Date().toISOString()}","counts":${JSON.stringify(counts)},\n"tables":{${tables.join(',\n')}}}`;
  const kdf = newKdfParams(TEST_KDF);
  return { file: encryptSnapshotBody(gzipSync(text), await deriveKey(password, kdf), kdf), text };
}

/**
 * What the old restore path stored for parsed rows (rowsToCopyText, and SQLite's inserts):
 * date-times through Date (to the millisecond, truncated), JSON values as JSON.stringify
 * writes them (so -0 is 0), integers as String() writes them.
 */
function asStored(specs: readonly TableSpec[], tables: SnapshotTables): SnapshotTables {
  const out: SnapshotTables = {};
  for (const spec of specs) {
    out[spec.table] = (tables[spec.table] ?? []).map((row) => {
      const stored: SnapshotRow = {};
      for (const col of spec.columns) {
        const v = row[col.name];
        stored[col.name] = v === null ? null : col.kind === 'datetime' ? new Date(v as string).toISOString() : (JSON.parse(JSON.stringify(v)) as unknown);
      }
      return stored;
    });
  }
  return out;
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

  it('restores hand-written JSON exactly as JSON.parse reads it: escapes, key order, duplicate keys, odd numbers, every date-time precision', async () => {
    const plain = generateBusinessTables({ configs: 1, nodesPerConfig: 3, neighbours: 0, forwardsPerNode: 0, audit: 0, settings: 0, label: 'odd', serverKey: s.app.serverKey });
    const [a, b] = plain.node!;
    const configId = plain.mesh_config![0]!.id as string;
    // Rows are JSON source text written in String.raw: `\u00e9` below is those six characters in the file.
    const escapes = String.raw`q\"uote \\ back \/ slash \u00e9 \ud83d\ude00 \u2028 c\u0001 n\n t\t`;
    const odd = {
      setting: [
        // Keys in reverse order, escapes in a jsonb string and in an object key, numbers
        // JSON.parse rewrites, a duplicate key inside the value (the last counts) and a
        // date-time without fractional seconds.
        String.raw`{"updated_at":"2026-01-02T03:04:05Z","value":{"s":"${escapes}","k\u00e9y\n":[1E2,-0,1.50,0.1e-3,-0.0e0,123456789012345,12345678901234567890],"dup":1,"dup":{"last":true}},"key":"odd.escapes"}`,
        // Duplicate keys in the row: the first of each pair would be refused or restore
        // another value; JSON.parse keeps the last.
        String.raw`{"key":"not a key!","value":"first","updated_at":"2026-01-02T03:04:05.1Z","key":"odd.duplicates","value":["second",-0.0E0],"updated_at":"2026-01-02T03:04:05.999999Z"}`,
        // An escaped column name, whitespace everywhere, a bare number as the value and an offset.
        ` \t{ "k\\u0065y" :\n"odd.escaped-name" , "value" : 0.1e-3 ,\r\n "updated_at" : "2026-01-02T05:04:05.12+02:00" } `,
        // The forms a database would round where JavaScript truncates: four and nine digits.
        String.raw`{"value":{},"updated_at":"2026-01-02T03:04:05.9995-00:30","key":"odd.rounding"}`,
        String.raw`{"value":[[]],"updated_at":"2026-12-31T23:59:59.999999999Z","key":"odd.nanos"}`,
        String.raw`{"key":"odd.millis","value":false,"updated_at":"2026-01-02T03:04:05.123Z"}`,
      ],
      peer_link: [
        // Integers as -0 and with an exponent; allowed IPs with an escaped character.
        String.raw`{"persistent_keepalive":-0,"allowed_ips":["${b!.address}\/32"],"link_group_id":"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","to_node_id":"${b!.id}","from_node_id":"${a!.id}","config_id":"${configId}","id":"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a01"}`,
        String.raw`{"id":"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a02","config_id":"${configId}","from_node_id":"${b!.id}","to_node_id":"${a!.id}","link_group_id":"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","allowed_ips":[ "${a!.address}/3\u0032" ],"persistent_keepalive":2.5E1}`,
      ],
      audit_record: [
        // Escapes in text columns, a nested jsonb value with every odd number, and the
        // date-time precisions the check accepts.
        ...['2026-01-02T03:04:05Z', '2026-01-02T03:04:05.1Z', '2026-01-02T03:04:05.12Z', '2026-01-02T03:04:05.123Z', '2026-01-02T03:04:05.123456Z', '2026-01-02T03:04:05.5-05:30'].map(
          (at, i) =>
            String.raw`{"detail":{"n":[1E2,-0,1.50,0.1e-3],"s":"${escapes}","d":{"z":1,"a":[{"b":"}"}],"z":2}},"entity_id":${i % 2 === 0 ? 'null' : `"x\u0031"`},"entity_type":"n\u006fde","action":"odd.${i}","actor":"${escapes}","at":"${at}","id":"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4b0${i}"}`,
        ),
      ],
    };
    const { file, text } = await handWrittenFile(plain, odd, ADMIN);
    // The file passes the API's check as any upload does; the restore then takes its rows
    // as the check left them (on PostgreSQL: the bytes-to-COPY path).
    await restore(s, file);

    const specs = createRepositories(s.app.uow.fork(), { serverKey: s.app.serverKey }).snapshots.tableSpecs();
    const expected = sortedByKey(asStored(specs, (JSON.parse(text) as { tables: SnapshotTables }).tables));
    const restored = sortedByKey(await businessRows(s.app));
    expect(restored).toEqual(expected);
    // The cases were there to be compared: what JSON.parse made of the odd text.
    const settings = new Map(restored.setting!.map((r) => [r.key, r]));
    expect(settings.get('odd.duplicates')).toEqual({ key: 'odd.duplicates', value: ['second', 0], updated_at: '2026-01-02T03:04:05.999Z' });
    expect(settings.get('odd.rounding')!.updated_at).toBe('2026-01-02T03:34:05.999Z');
    expect(settings.get('odd.escaped-name')).toEqual({ key: 'odd.escaped-name', value: 0.0001, updated_at: '2026-01-02T03:04:05.120Z' });
    expect(settings.get('odd.escapes')!.value).toEqual({
      s: 'q"uote \\ back / slash é 😀 \u2028 c\u0001 n\n t\t',
      'kéy\n': [100, 0, 1.5, 0.0001, 0, 123456789012345, 12345678901234567000],
      dup: { last: true },
    });
    expect(restored.audit_record!.map((r) => r.at)).toEqual(
      expect.arrayContaining(['2026-01-02T03:04:05.000Z', '2026-01-02T03:04:05.100Z', '2026-01-02T03:04:05.120Z', '2026-01-02T03:04:05.123Z', '2026-01-02T08:34:05.500Z']),
    );
    expect(restored.peer_link!.map((r) => r.persistent_keepalive).sort()).toEqual([0, 25]);
    // And the API shows the same.
    const listed = await s.get<{ items: { key: string; value: unknown }[] }>('/api/v1/settings?limit=100');
    expect(Object.fromEntries(listed.items.map((i) => [i.key, i.value]))).toEqual(Object.fromEntries(expected.setting!.map((r) => [r.key, r.value])));
  });
});
