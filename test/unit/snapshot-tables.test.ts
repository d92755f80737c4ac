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
import { openUpload, restoreStaged } from '../../src/snapshots/restore.js';
import { streamSnapshot } from '../../src/snapshots/reader.js';
import type { SnapshotPayload } from '../../src/snapshots/payload.js';
import { deriveKey, newKdfParams, seal } from '../../src/crypto.js';
import { encodeSnapshot } from '../../src/snapshots/writer.js';
import { rowCheck, rowSchema, snapshotTableSpecs, toIsoString, type SnapshotTables, type TableSpec } from '../../src/snapshots/tables.js';
import { validateSnapshotTables } from '../../src/snapshots/validator.js';
import { upgradeSnapshotTables } from '../../src/snapshots/upgrades.js';
import { TEST_SECRET_KEY } from '../support/db.js';
import { generateBusinessTables, snapshotPayload, TEST_KDF } from '../support/snapshot-data.js';
import { uploadSource } from '../support/snapshot-bytes.js';

function refusal(fn: () => unknown): SnapshotInvalidError {
  try {
    fn();
  } catch (err) {
    if (err instanceof SnapshotInvalidError) return err;
    throw err;
  }
  throw new Error('expected a SnapshotInvalidError');
}

async function asyncRefusal(fn: () => Promise<unknown>): Promise<SnapshotInvalidError> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof SnapshotInvalidError) return err;
    throw err;
  }
  throw new Error('expected a SnapshotInvalidError');
}

const clone = (t: SnapshotTables): SnapshotTables => structuredClone(t);
const SERVER_KEY = Buffer.from(TEST_SECRET_KEY, 'hex');

/**
 * A payload the way a restore reads it: encrypted into a file, then streamed back through
 * the upgrades and every row check, its rows gathered by table (as a restore's sink gets them).
 */
async function readBack(payload: SnapshotPayload, specs: readonly TableSpec[], serverKey = SERVER_KEY) {
  const kdf = newKdfParams(TEST_KDF);
  const key = await deriveKey('pw', kdf);
  const tables: SnapshotTables = {};
  const out = await streamSnapshot(encodeSnapshot(payload, key, kdf), key, {
    specs,
    validate: true,
    serverKey,
    sink: { rows: (spec, batch) => void (tables[spec.table] ??= []).push(...batch) },
  });
  return { ...out, tables };
}

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
    t.audit_record![1]!.colour = 'blue';
    delete t.audit_record![2]!.detail;
    const err = refusal(() => validateSnapshotTables(t, specs));
    expect(err.message).toContain('table mesh_config row 1');
    expect(err.message).toContain('column subnet: is missing');
    expect(err.message).toMatch(/table audit_record row 2 .*colour/);
    expect(err.message).toMatch(/table audit_record row 3 .*column detail: is missing/);
  });

  it('refuses null in a NOT NULL column, an over-long string, a NUL character and a lone surrogate', () => {
    const t = clone(good);
    t.node![0]!.public_key = null;
    t.node![1]!.name = 'x'.repeat(65);
    t.setting![0]!.value = 'a\u0000b';
    // Either database would store U+FFFD in its place: the restore would not be the file.
    t.audit_record![0]!.actor = 'admin\ud800';
    const err = refusal(() => validateSnapshotTables(t, specs));
    expect(err.message).toMatch(/table node row 1 .*column public_key/);
    expect(err.message).toMatch(/table node row 2 .*column name: .*64/);
    expect(err.message).toMatch(/table setting row 1 .*NUL/);
    expect(err.message).toMatch(/table audit_record row 1 .*column actor: contains a lone UTF-16 surrogate/);
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

  describe('the jobs\' domain rules', () => {
    const problemsOf = (edit: (t: SnapshotTables) => void): string => {
      const t = clone(good);
      edit(t);
      const err = refusal(() => validateSnapshotTables(t, specs));
      expect(err.reason).toBe('constraint_violation');
      return err.message;
    };

    it('refuses an EMQX username or client id other than node-<nodeId>', () => {
      const message = problemsOf((t) => {
        t.mqtt_credential![0]!.username = 'dashboard-admin';
        t.mqtt_credential![1]!.client_id = `node-${String(t.mqtt_credential![0]!.node_id)}`;
      });
      expect(message).toMatch(/table mqtt_credential row 1 \(id [0-9a-f-]{36}\): column username: must be "node-" followed by node_id \(node-[0-9a-f-]{36}\), got "dashboard-admin"/);
      expect(message).toMatch(/table mqtt_credential row 2 .*column client_id: must be "node-" followed by node_id/);
    });

    it('refuses names, endpoints, ports, keys and hashes the jobs would refuse', () => {
      const message = problemsOf((t) => {
        t.node![0]!.name = '../etc';
        t.node![3]!.endpoint = 'no-port.example.net';
        t.port_forward_rule![0]!.to_port = 0;
        t.node![1]!.public_key = 'not-a-key';
        t.mqtt_credential![2]!.password_hash = 'XYZ';
      });
      expect(message).toMatch(/table node row 1 .*column name: "\.\.\/etc" may contain only letters, digits/);
      expect(message).toMatch(/table node row 2 .*column public_key: is not a WireGuard key/);
      expect(message).toMatch(/table node row 4 .*column endpoint: "no-port.example.net" has no port/);
      expect(message).toMatch(/table mqtt_credential row 3 .*column password_hash: must be 64 lowercase hex/);
      expect(message).toMatch(/table port_forward_rule row 1 .*column to_port: 0 is out of range 1-65535/);
    });

    it('refuses a subnet with host bits, awg outside its limits or on wireguard, and a bad mtu', () => {
      const message = problemsOf((t) => {
        t.mesh_config![0]!.subnet = '10.0.0.1/16';
        t.mesh_config![0]!.awg = { jc: 4 };
        t.mesh_config![1]!.awg = { jc: 4, h1: 1 };
      });
      expect(message).toMatch(/table mesh_config row 1 .*column subnet: 10.0.0.1\/16 has host bits set/);
      expect(message).toMatch(/table mesh_config row 1 .*column awg: awg parameters are given but protocol is wireguard/);
      expect(message).toMatch(/table mesh_config row 2 .*column awg: h1: 1 is out of range 5-4294967295/);
    });

    it('refuses a node address outside, or reserved in, its own config\'s subnet, and a non-canonical one', () => {
      const message = problemsOf((t) => {
        // Inside the other config's subnet, not its own.
        const other = t.mesh_config!.find((c) => c.id !== t.node![0]!.config_id)!;
        t.node![0]!.address = String(other.subnet).replace('.0/16', '.9');
        t.node![1]!.address = String(t.mesh_config!.find((c) => c.id === t.node![1]!.config_id)!.subnet).replace('/16', '');
      });
      expect(message).toMatch(/table node row 1 .*column address: address 10\.\d+\.0\.9 is outside subnet 10\.\d+\.0\.0\/16 of config "gen-config-\d"/);
      expect(message).toMatch(/table node row 2 .*column address: address 10\.\d+\.0\.0 is the network address of subnet/);
    });

    it('refuses links and forwards across configs, and a credential of a static node', () => {
      const message = problemsOf((t) => {
        const foreign = t.node!.find((n) => n.config_id !== t.peer_link![0]!.config_id)!;
        t.peer_link![0]!.to_node_id = foreign.id;
        t.port_forward_rule![0]!.to_node_id = t.port_forward_rule![0]!.from_node_id;
        const staticNode = t.node!.find((n) => n.kind === 'static')!;
        t.mqtt_credential![0]!.node_id = staticNode.id;
        t.mqtt_credential![0]!.username = `node-${String(staticNode.id)}`;
        t.mqtt_credential![0]!.client_id = `node-${String(staticNode.id)}`;
      });
      expect(message).toMatch(/table peer_link row 1 .*column to_node_id: node "[0-9a-f-]{36}" belongs to config "[0-9a-f-]{36}", not to this row's config/);
      expect(message).toMatch(/table port_forward_rule row 1 .*column to_node_id: is the same node as from_node_id/);
      expect(message).toMatch(/table mqtt_credential row 1 .*column node_id: node "[0-9a-f-]{36}" is "static": only dynamic nodes have MQTT credentials/);
    });

    it('refuses settings the settings job would refuse: key, NUL, depth, size', () => {
      let deep: unknown = 1;
      for (let i = 0; i < 200_000; i++) deep = [deep];
      const message = problemsOf((t) => {
        t.setting![0]!.key = 'has space';
        t.setting![2]!.value = { list: ['x'.repeat(1024 * 1024)] };
      });
      expect(message).toMatch(/table setting row 1 .*column key: setting key "has space" must be 1-128 letters/);
      expect(message).toMatch(/table setting row 3 .*column value: is \d+ bytes of JSON, more than 1048576/);
      // Values older versions could write (above today's write bound, within a request) still restore.
      const older = clone(good);
      older.setting![2]!.value = { list: ['x'.repeat(200_000)] };
      expect(() => validateSnapshotTables(older, specs)).not.toThrow();
      // Depth is a rule of every JSON column, checked with the types (without deep recursion).
      expect(problemsOf((t) => (t.setting![1]!.value = deep))).toMatch(/table setting row 2 .*column value: is nested more than 64 levels deep/);
      // A NUL anywhere in a JSON column, with where it is.
      expect(problemsOf((t) => (t.audit_record![0]!.detail = { a: [{ 'b\u0000': 1 }] }))).toMatch(
        /table audit_record row 1 .*column detail: a\[0\] key "b\\u0000" contains a NUL character/,
      );
    });
  });

  describe('API tokens in older files', () => {
    const withTokens = () => generateBusinessTables({ configs: 1, nodesPerConfig: 3, tokens: 2 });

    it('drops their rows at any schema: a restore neither brings tokens back nor touches current ones', async () => {
      const tables = withTokens();
      expect(tables.api_token).toHaveLength(2);
      for (const schema of [LATEST_SCHEMA_VERSION, 'Migration20261124200000_config_mtu']) {
        const prepared = await readBack(snapshotPayload(tables, schema), specs);
        expect(prepared.tables).not.toHaveProperty('api_token');
        expect(prepared.tables.node).toHaveLength(3);
      }
      // The file's own rows are left as they were.
      expect(tables.api_token).toHaveLength(2);
    });

    it('ignores their rows even when they would not validate', async () => {
      const tables = withTokens();
      tables.api_token![0]!.colour = 'blue';
      await expect(readBack(snapshotPayload(tables), specs)).resolves.toBeDefined();
    });
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
      const upload = await openUpload(uploadSource(checked), 'pw', specs, SERVER_KEY);
      // Checked bytes: no row check runs (even against specs it would refuse).
      const noTables = specs.slice(1);
      const restored = async (file: Buffer, sealed: string, with_: readonly TableSpec[]) => {
        const counts: Record<string, number> = {};
        await restoreStaged(() => file, sealed, SERVER_KEY, with_, {
          rows: (spec, batch) => void (counts[spec.table] = (counts[spec.table] ?? 0) + batch.length),
        });
        return counts;
      };
      expect((await restored(checked, upload.sealedKey, noTables)).node).toBe(good.node!.length);
      // Other bytes under the same seal (same file key): every check runs again.
      expect((await asyncRefusal(() => restored(other, upload.sealedKey, specs))).reason).toBe('constraint_violation');
      // A seal holding only the key (staged before this check existed): every check runs.
      const keyOnly = seal(key, SERVER_KEY).toString('base64');
      expect((await asyncRefusal(() => restored(checked, keyOnly, noTables))).reason).toBe('bad_payload');
      expect((await restored(checked, keyOnly, specs)).node).toBe(good.node!.length);
    });
  });

  describe('upgrades', () => {
    const initialShape = (tables: SnapshotTables): SnapshotTables => ({
      ...tables,
      mesh_config: tables.mesh_config!.map(({ mtu: _mtu, ...row }) => row),
    });

    it('brings rows from the initial schema to the latest: configs get mtu 1420', async () => {
      const old = initialShape(good);
      expect(() => validateSnapshotTables(old, specs)).toThrow(/column mtu: is missing/);
      const prepared = await readBack(snapshotPayload(old, 'Migration20261124000000_initial'), specs);
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

  it('refuses node private keys sealed under another SECRET_KEY, saying which key to set', async () => {
    await expect(readBack(snapshotPayload(good), specs)).resolves.toBeDefined();
    const err = await asyncRefusal(() => readBack(snapshotPayload(good), specs, Buffer.alloc(32, 7)));
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
