/**
 * Restore's checks before any row is written: rows are brought to the current schema by
 * the upgrade steps, then must fit it (types, lengths, nullability, keys, references).
 * Every refusal names the table, the row and the column.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MikroORM } from '@mikro-orm/core';
import { loadConfig } from '../../src/config.js';
import { ormOptions } from '../../src/db/orm.js';
import { LATEST_SCHEMA_VERSION } from '../../src/migrations/index.js';
import { SnapshotInvalidError } from '../../src/snapshots/errors.js';
import { openStaged, openUpload, prepareSnapshot } from '../../src/snapshots/restore.js';
import { deriveKey, newKdfParams, seal } from '../../src/crypto.js';
import { encodeSnapshot } from '../../src/snapshots/format.js';
import { rowCheck, rowSchema, snapshotTableSpecs, toIsoString, validateSnapshotTables, type SnapshotTables, type TableSpec } from '../../src/snapshots/tables.js';
import { upgradeSnapshotTables } from '../../src/snapshots/upgrades.js';
import { TEST_SECRET_KEY } from '../support/db.js';
import { generateBusinessTables, snapshotPayload, TEST_KDF } from '../support/snapshot-data.js';

function refusal(fn: () => unknown): SnapshotInvalidError {
  try {
    fn();
  } catch (err) {
    if (err instanceof SnapshotInvalidError) return err;
    throw err;
  }
  throw new Error('expected a SnapshotInvalidError');
}

const clone = (t: SnapshotTables): SnapshotTables => structuredClone(t);
const SERVER_KEY = Buffer.from(TEST_SECRET_KEY, 'hex');

describe('snapshot rows against the current schema', () => {
  let dir: string;
  let orm: MikroORM;
  let specs: readonly TableSpec[];
  let good: SnapshotTables;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'meshq-tables-'));
    orm = new MikroORM(ormOptions(loadConfig({ DATABASE_URL: `sqlite:${join(dir, 'x.db')}`, SECRET_KEY: 'c'.repeat(64) })));
    specs = snapshotTableSpecs(orm.getMetadata());
    good = generateBusinessTables({ configs: 2, nodesPerConfig: 6, audit: 8 });
  });
  afterAll(async () => {
    await orm?.close(true);
    rmSync(dir, { recursive: true, force: true });
  });

  it('accepts generated rows of every table', () => {
    expect(() => validateSnapshotTables(good, specs)).not.toThrow();
  });

  it('refuses a value of the wrong type, naming table, row and column', () => {
    const t = clone(good);
    t.node![2]!.listen_port = 'fifty';
    const err = refusal(() => validateSnapshotTables(t, specs));
    expect(err.reason).toBe('constraint_violation');
    expect(err.message).toMatch(/^rows break a constraint: table node row 3 \(id [0-9a-f-]{36}\): column listen_port: /);
  });

  it('refuses a missing required column and an unknown one', () => {
    const t = clone(good);
    delete t.mesh_config![0]!.subnet;
    t.api_token![1]!.colour = 'blue';
    const err = refusal(() => validateSnapshotTables(t, specs));
    expect(err.message).toContain('table mesh_config row 1');
    expect(err.message).toContain('column subnet: is missing');
    expect(err.message).toMatch(/table api_token row 2 .*colour/);
  });

  it('refuses null in a NOT NULL column, an over-long string and a NUL character', () => {
    const t = clone(good);
    t.node![0]!.public_key = null;
    t.node![1]!.name = 'x'.repeat(65);
    t.setting![0]!.value = 'a\u0000b';
    const err = refusal(() => validateSnapshotTables(t, specs));
    expect(err.message).toMatch(/table node row 1 .*column public_key/);
    expect(err.message).toMatch(/table node row 2 .*column name: .*64/);
    expect(err.message).toMatch(/table setting row 1 .*NUL/);
  });

  it('refuses a foreign key that points at no row of the snapshot', () => {
    const t = clone(good);
    t.peer_link![4]!.to_node_id = '01900000-0000-7000-8000-00000000dead';
    const err = refusal(() => validateSnapshotTables(t, specs));
    expect(err.message).toMatch(/table peer_link row 5 \(id [^)]+\): column to_node_id = "01900000-0000-7000-8000-00000000dead" is no id in table node/);
  });

  it('refuses a repeated primary key and a broken unique constraint', () => {
    const t = clone(good);
    t.audit_record![3]!.id = t.audit_record![1]!.id;
    t.node![5]!.name = t.node![4]!.name;
    const err = refusal(() => validateSnapshotTables(t, specs));
    expect(err.message).toMatch(/table node row 6 .*unique node_config_name_unique \(config_id, name\) .* repeats row 5/);
    expect(err.message).toMatch(/table audit_record row 4 .*primary key \(id\) .* repeats row 2/);
  });

  it('takes the quick path only for rows the full schema accepts', () => {
    const edges: unknown[] = [
      null, undefined, '', 'x', 'x'.repeat(65), 'x'.repeat(300), 'a\u0000b', '\\u0000 as text', 0, -0, 1.5, 2 ** 31, -(2 ** 31), NaN, true, 'true',
      '0190A000-0000-7000-8000-000000000001', '01900000-0000-7000-8000-000000000001', '2026-02-30T00:00:00.000Z', '2026-01-02T03:04:05.678Z',
      '2026-01-02T03:04:05.678+01:00', '2026-01-02 03:04:05', '2028-02-29T00:00:00.000Z', '2027-02-29T00:00:00.000Z',
      [], ['a'], { a: 1 }, { a: 'b\u0000' }, { 'k\u0000': 1 }, [{ deep: ['\u0000'] }], new Date(0), Object.create(null),
    ];
    let quick = 0;
    for (const spec of specs) {
      const base = good[spec.table]![0]!;
      expect(rowCheck(spec)(base)).toBe(true);
      for (const col of spec.columns) {
        for (const value of edges) {
          const row = { ...base, [col.name]: value };
          if (rowCheck(spec)(row)) {
            quick++;
            expect(rowSchema(spec).safeParse(row).success, `${spec.table}.${col.name} = ${typeof value === "object" && value !== null ? JSON.stringify(value) : String(value)}`).toBe(true);
          }
        }
      }
      const { [spec.columns[0]!.name]: _dropped, ...missing } = base;
      expect(rowCheck(spec)(missing)).toBe(false);
      expect(rowCheck(spec)({ ...base, extra: 1 })).toBe(false);
    }
    expect(quick).toBeGreaterThan(50);
  });

  it('refuses tables this meshq does not have and missing ones', () => {
    const t = clone(good);
    delete t.port_forward_rule;
    t.mystery = [];
    const err = refusal(() => validateSnapshotTables(t, specs));
    expect(err.reason).toBe('bad_payload');
    expect(err.message).toContain('tables this meshq does not have: mystery');
    expect(err.message).toContain('missing tables: port_forward_rule');
  });

  it('shows the first five problems of a file full of them', () => {
    const t = clone(good);
    for (const row of t.audit_record!) row.actor = 7;
    const err = refusal(() => validateSnapshotTables(t, specs));
    expect(err.message.match(/table audit_record row/g)).toHaveLength(5);
    expect(err.message).toMatch(/first 5 problems shown/);
  });

  describe('the restore job and the API check', () => {
    it('skips the row checks only for the very bytes the API checked, under this schema and version', async () => {
      const kdf = newKdfParams(TEST_KDF);
      const key = await deriveKey('pw', kdf);
      const checked = encodeSnapshot(snapshotPayload(good), key, kdf);
      const bad = clone(good);
      bad.peer_link![0]!.to_node_id = '01900000-0000-7000-8000-00000000dead';
      const other = encodeSnapshot(snapshotPayload(bad), key, kdf);
      const upload = await openUpload(checked, 'pw', specs, SERVER_KEY);
      // Checked bytes: no row check runs (even against specs it would refuse).
      const noTables = specs.slice(1);
      expect(openStaged(checked, upload.sealedKey, SERVER_KEY, noTables).tables.node).toHaveLength(good.node!.length);
      // Other bytes under the same seal (same file key): every check runs again.
      expect(refusal(() => openStaged(other, upload.sealedKey, SERVER_KEY, specs)).reason).toBe('constraint_violation');
      // A seal holding only the key (staged before this check existed): every check runs.
      const keyOnly = seal(key, SERVER_KEY).toString('base64');
      expect(refusal(() => openStaged(checked, keyOnly, SERVER_KEY, noTables)).reason).toBe('bad_payload');
      expect(openStaged(checked, keyOnly, SERVER_KEY, specs).tables.node).toHaveLength(good.node!.length);
    });
  });

  describe('upgrades', () => {
    const initialShape = (tables: SnapshotTables): SnapshotTables => ({
      ...tables,
      mesh_config: tables.mesh_config!.map(({ mtu: _mtu, ...row }) => row),
    });

    it('brings rows from the initial schema to the latest: configs get mtu 1420', () => {
      const old = initialShape(good);
      expect(() => validateSnapshotTables(old, specs)).toThrow(/column mtu: is missing/);
      const prepared = prepareSnapshot(snapshotPayload(old, 'Migration20261124000000_initial'), specs, SERVER_KEY);
      expect(prepared.tables.mesh_config!.map((r) => r.mtu)).toEqual([1420, 1420]);
      expect(prepared.upgradedThrough.at(-1)).toBe(LATEST_SCHEMA_VERSION);
      expect(prepared.meta.schemaVersion).toBe('Migration20261124000000_initial');
      // Steps never mutate their input.
      expect(old.mesh_config![0]).not.toHaveProperty('mtu');
    });

    it('applies nothing to a file at the latest schema', () => {
      const out = upgradeSnapshotTables(LATEST_SCHEMA_VERSION, good);
      expect(out.applied).toEqual([]);
      expect(out.tables).toBe(good);
    });

    it('refuses a newer schema with the upgrade advice, and an unknown one', () => {
      const newer = refusal(() => upgradeSnapshotTables('Migration29990101000000_future', good));
      expect(newer.reason).toBe('schema_too_new');
      expect(newer.message).toBe(
        `snapshot schema Migration29990101000000_future is newer than this meshq (${LATEST_SCHEMA_VERSION}); upgrade meshq first`,
      );
      const foreign = refusal(() => upgradeSnapshotTables('Migration20200101000000_elsewhere', good));
      expect(foreign.reason).toBe('schema_unknown');
      expect(refusal(() => upgradeSnapshotTables('v2', good)).reason).toBe('schema_unknown');
    });
  });

  it('refuses node private keys sealed under another SECRET_KEY, saying which key to set', () => {
    expect(() => prepareSnapshot(snapshotPayload(good), specs, SERVER_KEY)).not.toThrow();
    const err = refusal(() => prepareSnapshot(snapshotPayload(good), specs, Buffer.alloc(32, 7)));
    expect(err.reason).toBe('secret_key_mismatch');
    expect(err.message).toMatch(/^12 of 12 values of node.private_key_enc do not open with this server's SECRET_KEY.*data\/secret.key/);
  });

  it('reads both databases\' date-time forms to the millisecond', () => {
    expect(toIsoString('2026-01-02 03:04:05.678+00')).toBe('2026-01-02T03:04:05.678Z');
    expect(toIsoString('2026-01-02 04:04:05.678+01')).toBe('2026-01-02T03:04:05.678Z');
    expect(toIsoString('2026-01-02 08:34:05.678+05:30')).toBe('2026-01-02T03:04:05.678Z');
    expect(toIsoString(Date.UTC(2026, 0, 2, 3, 4, 5, 678))).toBe('2026-01-02T03:04:05.678Z');
    expect(toIsoString(new Date('2026-01-02T03:04:05.678Z'))).toBe('2026-01-02T03:04:05.678Z');
  });
});
