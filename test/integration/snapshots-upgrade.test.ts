/**
 * Old files restore: a snapshot exported at the initial schema (before mesh_config had an
 * mtu column; test/fixtures/make-initial-schema-snapshot.ts made it) restores into the
 * latest schema through the upgrade steps, configs getting mtu 1420 as the migration gave
 * existing rows, its API token ignored, everything else exactly as in the file.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { createRepositories } from '../../src/repositories/index.js';
import { LATEST_SCHEMA_VERSION } from '../../src/migrations/index.js';
import { deriveFileKey, readHeader } from '../../src/snapshots/container.js';
import { decodeSnapshot } from '../../src/snapshots/payload.js';

const openSnapshot = async (file: Buffer, password: string) => decodeSnapshot(file, await deriveFileKey(file, file.length, password));
import { DIALECTS } from '../support/db.js';
import { businessRows, sortedByKey, uploadSnapshot } from '../support/snapshot-data.js';
import { startStack, type JobView, type Stack } from '../support/stack.js';

/** The fixture's password (see the script that made it). */
const FIXTURE_PASSWORD = 'initial-schema-fixture-pw';
const fixture = readFileSync(new URL('../fixtures/snapshot-initial-schema.meshq', import.meta.url));

describe.each(DIALECTS)('restoring a snapshot from the initial schema on %s', (dialect) => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack(dialect, 'snap_upgrade', { adminPassword: 'upgrade-admin-password' });
  });
  afterAll(async () => {
    await s?.stop();
  });

  it('upgrades its rows to the latest schema: configs get mtu 1420, everything else as in the file', async () => {
    const payload = await openSnapshot(fixture, FIXTURE_PASSWORD);
    expect(payload.schemaVersion).toBe('Migration20261124000000_initial');
    expect(payload.schemaVersion).not.toBe(LATEST_SCHEMA_VERSION);
    expect(payload.tables.mesh_config![0]).not.toHaveProperty('mtu');
    expect(readHeader(fixture).formatVersion).toBe(1);

    const res = await uploadSnapshot(s.api, s.auth, fixture, FIXTURE_PASSWORD, '?wait=20000');
    expect(res.statusCode, res.body).toBe(200);
    const job = res.json<JobView>();
    expect(job.state, JSON.stringify(job.error)).toBe('completed');

    const rows = await businessRows(s.app);
    expect(rows.mesh_config!.map((c) => c.mtu)).toEqual([1420, 1420]);
    // The file's api_token rows are ignored: tokens are not business data any more.
    const { api_token: tokens, ...business } = payload.tables;
    expect(tokens).toHaveLength(1);
    const expected = sortedByKey({ ...business, mesh_config: business.mesh_config!.map((c) => ({ ...c, mtu: 1420 })) });
    expect(rows).toEqual(expected);
    expect((await s.get<{ items: unknown[] }>('/api/v1/tokens')).items).toEqual([]);

    const last = await createRepositories(s.app.uow.fork(), { serverKey: s.app.serverKey }).system.get<{ schemaVersion: string; upgradedThrough: string[] }>('last-restore');
    expect(last).toMatchObject({ schemaVersion: 'Migration20261124000000_initial', upgradedThrough: expect.arrayContaining(['Migration20261124200000_config_mtu']) });
    expect(last!.upgradedThrough.at(-1)).toBe(LATEST_SCHEMA_VERSION);
  });

  it('exports the restored data at the latest schema', async () => {
    const res = await s.call({ method: 'POST', url: '/api/v1/snapshots/export?wait=20000' });
    expect(res.statusCode, res.body).toBe(200);
    const { snapshotId } = res.json<JobView>().result as { snapshotId: string };
    const meta = await s.get<{ schemaVersion: string }>(`/api/v1/snapshots/${snapshotId}`);
    expect(meta.schemaVersion).toBe(LATEST_SCHEMA_VERSION);
    const file = (await s.call({ method: 'GET', url: `/api/v1/snapshots/${snapshotId}/download` })).rawPayload;
    const payload = await openSnapshot(file, 'upgrade-admin-password');
    expect(payload.tables.mesh_config!.every((c) => c.mtu === 1420)).toBe(true);
  });
});
