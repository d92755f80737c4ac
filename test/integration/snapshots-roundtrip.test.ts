/**
 * Snapshots move a whole meshq between databases without losing a bit: data made
 * through the API on SQLite is exported, restored on PostgreSQL, exported there and
 * restored on a fresh SQLite, and every business row (ids, relations, JSON values,
 * timestamps to the millisecond) is equal at each step, as seen by the snapshot reader and
 * by the API. The administrator, API tokens and system tables stay with the database a
 * snapshot is restored into.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { SnapshotArchive } from '../../src/domain/entities/system.js';
import { createRepositories } from '../../src/repositories/index.js';
import { LATEST_SCHEMA_VERSION } from '../../src/migrations/index.js';
import { readHeader } from '../../src/snapshots/container.js';
import type { SnapshotTables } from '../../src/snapshots/tables.js';
import { basic, startStack, type JobView, type Stack } from '../support/stack.js';
import { businessRows, uploadSnapshot } from '../support/snapshot-data.js';

const SQLITE_ADMIN = 'sqlite-admin-password';
const PG_ADMIN = 'postgres-admin-password';

interface Page<T> {
  items: T[];
  next: string | null;
}

/** What the API shows of every business table. */
async function apiView(s: Stack): Promise<Record<string, unknown>> {
  const configs = await s.get<Page<{ id: string }>>('/api/v1/configs?limit=500');
  const out: Record<string, unknown> = { configs: configs.items };
  for (const c of configs.items) {
    const nodes = await s.get<Page<{ id: string }>>(`/api/v1/configs/${c.id}/nodes?limit=500`);
    out[`nodes:${c.id}`] = nodes.items;
    out[`links:${c.id}`] = (await s.get<Page<unknown>>(`/api/v1/configs/${c.id}/links?limit=500`)).items;
    out[`forwards:${c.id}`] = (await s.get<Page<unknown>>(`/api/v1/configs/${c.id}/port-forwards?limit=500`)).items;
    for (const n of nodes.items) out[`node:${n.id}`] = await s.get(`/api/v1/nodes/${n.id}`);
  }
  out.settings = (await s.get<Page<unknown>>('/api/v1/settings?limit=500')).items;
  out.audit = (await s.get<Page<unknown>>('/api/v1/audit?limit=500')).items;
  return out;
}

async function exportAndDownload(s: Stack): Promise<{ file: Buffer; job: JobView }> {
  const res = await s.call({ method: 'POST', url: '/api/v1/snapshots/export?wait=30000' });
  expect(res.statusCode, res.body).toBe(200);
  const job = res.json<JobView>();
  expect(job.state, JSON.stringify(job.error)).toBe('completed');
  const { snapshotId, size, sha256 } = job.result as { snapshotId: string; size: number; sha256: string };
  const download = await s.call({ method: 'GET', url: `/api/v1/snapshots/${snapshotId}/download` });
  expect(download.statusCode).toBe(200);
  expect(download.headers['content-type']).toBe('application/octet-stream');
  expect(download.headers['content-disposition']).toMatch(/^attachment; filename="meshq-\d{8}T\d{6}Z-[0-9a-f]{8}\.meshq"$/);
  const file = download.rawPayload;
  expect(file.length).toBe(size);
  expect(createHash('sha256').update(file).digest('hex')).toBe(sha256);
  return { file, job };
}

async function restore(s: Stack, file: Buffer, password: string): Promise<JobView> {
  const res = await uploadSnapshot(s.api, s.auth, file, password, '?wait=30000');
  expect(res.statusCode, res.body).toBe(200);
  const job = res.json<JobView>();
  expect(job).toMatchObject({ type: 'snapshot.restore', state: 'completed' });
  return job;
}

const countsOf = (t: SnapshotTables) => Object.fromEntries(Object.entries(t).map(([k, v]) => [k, v.length]));

describe('snapshot round trip SQLite -> PostgreSQL -> SQLite', () => {
  const stacks: Stack[] = [];
  afterAll(async () => {
    for (const s of stacks) await s.stop();
  });

  let rowsBefore: SnapshotTables;
  let viewBefore: Record<string, unknown>;
  let fromSqlite: Buffer;
  let fromPostgres: Buffer;

  it('creates data of every business table through the API on SQLite and exports it', async () => {
    const a = await startStack('sqlite', 'roundtrip_a', { adminPassword: SQLITE_ADMIN });
    stacks.push(a);
    const office = (await a.job('config.create', { name: 'office', subnet: '10.20.0.0/24', dns: ['1.1.1.1', '2606:4700::1111'] })).result!.id as string;
    const awg = (await a.job('config.create', { name: 'stealth', subnet: 'fd00:42::/64', protocol: 'amneziawg', awg: { jc: 4, jmin: 40, jmax: 70, h1: 11, h2: 22, h3: 33, h4: 44 } })).result!.id as string;
    await a.job('config.update', { id: office, listenPort: 51999 });
    const nodes: string[] = [];
    for (const [configId, name, kind] of [[office, 'alpha', 'dynamic'], [office, 'beta', 'dynamic'], [office, 'gamma', 'static'], [awg, 'delta', 'dynamic'], [awg, 'epsilon', 'static']] as const) {
      const job = await a.job('node.create', { configId, name, kind, ...(kind === 'static' ? { endpoint: `${name}.example.net:51820`, listenPort: 51820 } : {}) });
      expect(job.state, JSON.stringify(job.error)).toBe('completed');
      nodes.push(job.result!.id as string);
    }
    expect((await a.job('mesh.generate', { configId: office })).state).toBe('completed');
    expect((await a.job('mesh.generate', { configId: awg, persistentKeepalive: 0 })).state).toBe('completed');
    expect((await a.job('port-forward.create', { configId: office, fromNodeId: nodes[0], fromPort: 8080, toNodeId: nodes[2], toPort: 80, protocol: 'tcp' })).state).toBe('completed');
    expect((await a.job('settings.update', { values: { 'ui.theme': 'dark', 'limits': { max: 10, tags: ['a', 'b'], deep: { ok: true, none: null } }, 'flag': false, 'count': 3, 'greeting': 'Grüß Gott ↔ 東京 🛰️' } })).state).toBe('completed');
    const rotated = await a.call({ method: 'POST', url: `/api/v1/nodes/${nodes[1]}/credentials?wait=20000` });
    expect(rotated.statusCode, rotated.body).toBe(200);
    const token = await a.call({ method: 'POST', url: '/api/v1/tokens?wait=20000', payload: { name: 'ci' } });
    expect(token.statusCode, token.body).toBe(200);
    // Presence carries the broker's time to the millisecond.
    const presence = await a.app.queues.submit('node.presence', { nodeId: nodes[0]!, online: true, at: '2026-11-24T10:11:12.345Z' }, { actor: 'system' });
    expect((await a.app.queues.waitFor(presence, 20_000)).state).toBe('completed');

    rowsBefore = await businessRows(a.app);
    for (const [table, rows] of Object.entries(rowsBefore)) expect(rows.length, table).toBeGreaterThan(0);
    expect(rowsBefore.node!.find((n) => n.id === nodes[0])!.last_seen_at).toBe('2026-11-24T10:11:12.345Z');
    expect(rowsBefore.mesh_config!.find((c) => c.id === awg)!.awg).toEqual({ jc: 4, jmin: 40, jmax: 70, h1: 11, h2: 22, h3: 33, h4: 44 });
    viewBefore = await apiView(a);

    const exported = await exportAndDownload(a);
    fromSqlite = exported.file;
    // Exporting changes no business row.
    expect(await businessRows(a.app)).toEqual(rowsBefore);

    const list = await a.get<Page<{ id: string; kind: string; schemaVersion: string; counts: Record<string, number> }>>('/api/v1/snapshots');
    expect(list.items).toHaveLength(1);
    expect(list.items[0]).toMatchObject({ id: exported.job.result!.snapshotId, kind: 'export', schemaVersion: LATEST_SCHEMA_VERSION, counts: countsOf(rowsBefore) });
    expect(await a.get(`/api/v1/snapshots/${list.items[0]!.id}`)).toEqual(list.items[0]);
    expect(JSON.stringify(list)).not.toMatch(/sealed|data"/i);
    // The file carries the administrator's KDF parameters, not test-cheap ones.
    expect(readHeader(fromSqlite).kdf.N).toBe(2 ** 15);
  });

  it('restores the SQLite export on PostgreSQL, replacing what was there; the administrator stays', async () => {
    const b = await startStack('postgresql', 'roundtrip_b', { adminPassword: PG_ADMIN });
    stacks.push(b);
    expect((await b.job('config.create', { name: 'to-be-replaced', subnet: '10.99.0.0/24' })).state).toBe('completed');

    // The password is the one the file was exported under (SQLite's administrator).
    const job = await restore(b, fromSqlite, SQLITE_ADMIN);
    expect(job.result).toMatchObject({ rows: countsOf(rowsBefore), epoch: 1, startedAt: expect.any(String), finishedAt: expect.any(String) });
    expect(job.progress).toBe(100);

    expect(await businessRows(b.app)).toEqual(rowsBefore);
    expect(await apiView(b)).toEqual(viewBefore);

    // Not business data: PostgreSQL's administrator still logs in, SQLite's does not.
    expect((await b.api.inject({ method: 'GET', url: '/api/v1/configs', headers: basic('admin', PG_ADMIN) })).statusCode).toBe(200);
    expect((await b.api.inject({ method: 'GET', url: '/api/v1/configs', headers: basic('admin', SQLITE_ADMIN) })).statusCode).toBe(401);
    // Nor are API tokens: SQLite's token "ci" did not come along.
    expect((await b.get<Page<unknown>>('/api/v1/tokens')).items).toEqual([]);
    const state = await createRepositories(b.app.uow.fork(), { serverKey: b.app.serverKey }).system;
    expect(await state.dataEpoch()).toBe(1);
    expect((await state.brokerSyncState()).pendingSeq).toBeGreaterThan(0);
    // The staged upload is gone once restored.
    expect(await b.app.orm.em.fork().count(SnapshotArchive, { kind: 'staged' })).toBe(0);

    fromPostgres = (await exportAndDownload(b)).file;
  });

  it('restores the PostgreSQL export on a fresh SQLite with the PostgreSQL administrator password', async () => {
    const c = await startStack('sqlite', 'roundtrip_c', { adminPassword: 'third-admin-password' });
    stacks.push(c);
    await restore(c, fromPostgres, PG_ADMIN);
    expect(await businessRows(c.app)).toEqual(rowsBefore);
    expect(await apiView(c)).toEqual(viewBefore);
  });
});
