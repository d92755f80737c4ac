/**
 * The export writes rows as the database hands them over (on SQLite, JSON built by
 * json_object), never through the JS row reader. The file must say exactly what the JS
 * reader says about the same rows, for awkward values too: unicode past U+FFFF and in the
 * private-use range (whose order differs between UTF-8 and UTF-16), quotes, backslashes
 * and control characters, NULLs, nested JSON, bare-number JSON, very large and very small
 * numbers, booleans, dates with milliseconds; and a restore of that file must bring every
 * row back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ForeignKeyConstraintViolationException, UniqueConstraintViolationException } from '@mikro-orm/core';
import { bootstrap, type AppContext } from '../../src/bin/bootstrap.js';
import { createRepositories } from '../../src/repositories/index.js';
import type { SnapshotRepository } from '../../src/repositories/snapshots.js';
import { deriveKey, newKdfParams } from '../../src/crypto.js';
import { exportEnvelope } from '../../src/snapshots/export.js';
import { decodeSnapshot } from '../../src/snapshots/payload.js';
import { SnapshotWriter } from '../../src/snapshots/writer.js';
import { finishToBuffer } from '../support/snapshot-bytes.js';
import type { SnapshotTables } from '../../src/snapshots/tables.js';
import { createTestDatabase, DIALECTS, type TestDatabase } from '../support/db.js';
import { deletePrefix } from '../support/redis.js';
import { businessRows, generateBusinessTables, sortedByKey, TEST_KDF } from '../support/snapshot-data.js';

const AWKWARD = ['quote " and \\ backslash', 'tab\tnew\nline\r\u0001\u001f', 'Zürich ↔ 東京 🛰️', '\uE000 private', '😀 astral', "it's", '</script>', ''];

/** Date-times around the epoch and before it (SQLite writes those by another path). */
const EDGE_DATES = ['1969-12-31T23:59:59.999Z', '1970-01-01T00:00:00.000Z', '1970-01-01T00:00:00.001Z', '1901-02-03T04:05:06.007Z', undefined];

/** Generated rows with awkward values in every kind of column. */
function awkwardTables(): SnapshotTables {
  const t = generateBusinessTables({ configs: 2, nodesPerConfig: 12, neighbours: 2, audit: 30, settings: 0, label: 'awk' });
  const values: unknown[] = [
    0.1 + 0.2,
    1e300,
    5e-324,
    -0.000123,
    2 ** 53 + 2,
    -2147483648,
    42,
    true,
    'plain "string" \\ with escapes',
    [1, 'two', null, { deep: { deeper: [AWKWARD] } }],
    { emoji: '🛰️', 'key with "quotes"': null, nested: { n: 1.5e-10, s: AWKWARD[1] } },
  ];
  // Keys whose UTF-8 and UTF-16 orders differ ("\uE000" sorts after "😀" in UTF-8 only).
  const keys = ['a', 'b\uE000', 'b😀', 'z"q\\', 'ü', 'A', 'b', 'setting.10', 'setting.9', 'x\u0001', '东京'];
  t.setting = keys.map((key, i) => ({ key, value: values[i % values.length], updated_at: new Date(Date.UTC(2026, 0, 1) + i * 1_001 + (i % 2 === 0 ? 999 : 1)).toISOString() }));
  t.node = t.node!.map((n, i) => ({ ...n, name: `${AWKWARD[i % AWKWARD.length]}-${i}`.slice(0, 64), endpoint: i % 3 === 0 ? null : `"host\\${i}".example:1`, last_seen_at: i % 2 ? null : EDGE_DATES[(i / 2) % EDGE_DATES.length] ?? new Date(Date.UTC(1999, 11, 31, 23, 59, 59, i)).toISOString() }));
  t.audit_record = t.audit_record!.map((a, i) => ({ ...a, actor: AWKWARD[i % AWKWARD.length]!, detail: { i, v: values[i % values.length], list: AWKWARD } }));
  t.mesh_config = t.mesh_config!.map((c, i) => ({ ...c, listen_port: i === 0 ? 2147483647 : 1, dns: i === 0 ? [] : AWKWARD, awg: i === 0 ? null : { deep: [[[]]], f: -1.25 } }));
  return t;
}

describe.each(DIALECTS)('export writes the database rows as JSON on %s', (dialect) => {
  let db: TestDatabase;
  let app: AppContext;
  const tables = awkwardTables();
  beforeAll(async () => {
    db = await createTestDatabase(dialect, 'snap_json');
    app = await bootstrap('test', db.config());
    await app.uow.write((em, tx) => createRepositories(em, { serverKey: app.serverKey, tx }).snapshots.replaceBusinessData(tables), { exclusive: true });
  });
  afterAll(async () => {
    await app?.close();
    if (app) await deletePrefix(app.config.queuePrefix);
    await db?.drop();
  });

  async function exportFile(key: Buffer, kdf: ReturnType<typeof newKdfParams>): Promise<Buffer> {
    const writer = await app.uow.read((em) =>
      createRepositories(em, { serverKey: app.serverKey }).snapshots.writeBusinessTablesJson(new SnapshotWriter(exportEnvelope('test-schema'), key, kdf)),
    );
    return finishToBuffer(writer);
  }

  it('decodes to exactly what the JS reader reads, and round-trips every row', async () => {
    const kdf = newKdfParams(TEST_KDF);
    const key = await deriveKey('pw', kdf);
    const file = await exportFile(key, kdf);
    const payload = decodeSnapshot(file, key);

    const viaJs = await businessRows(app);
    // What the previous export wrote: JSON.stringify of the JS reader's rows.
    expect(payload.tables).toStrictEqual(JSON.parse(JSON.stringify(viaJs)));
    expect(Object.keys(payload.tables)).toEqual(Object.keys(viaJs));
    for (const [name, rows] of Object.entries(payload.tables)) {
      expect(payload.counts[name]).toBe(rows.length);
      // Same keys in the same order as the JS reader's rows.
      if (rows.length > 0) expect(Object.keys(rows[0]!)).toEqual(Object.keys(viaJs[name]![0]!));
    }
    // And that is the data that went in (rows in code-unit order of their keys).
    expect(payload.tables).toEqual(sortedByKey(tables));
    expect(payload.tables.setting!.map((s) => s.key)).toEqual([...tables.setting!.map((s) => s.key as string)].sort());

    await app.uow.write((em, tx) => createRepositories(em, { serverKey: app.serverKey, tx }).snapshots.replaceBusinessData(payload.tables), { exclusive: true });
    expect(await businessRows(app)).toEqual(viaJs);
  });

  it('leaves every row as it was when a restore fails half-way, in the database or while decoding; later transactions run normally', async () => {
    const before = await businessRows(app);
    const replace = (rows: Parameters<SnapshotRepository['replaceBusinessData']>[0]) =>
      app.uow.write((em, tx) => createRepositories(em, { serverKey: app.serverKey, tx }).snapshots.replaceBusinessData(rows), { exclusive: true });
    // A repeated primary key the database refuses after earlier tables went in (restore
    // trusts rows the API checked; the database is the last line).
    const broken = structuredClone(before);
    broken.peer_link = [...broken.peer_link!, broken.peer_link![0]!];
    const refused = await replace(broken).then(
      () => undefined,
      (err: unknown) => err,
    );
    // PostgreSQL's COPY errors become the ORM's exceptions, as the jobs classify them.
    if (dialect === 'postgresql') expect(refused).toBeInstanceOf(UniqueConstraintViolationException);
    else expect(String(refused)).toMatch(/UNIQUE/);
    expect(await businessRows(app)).toEqual(before);
    // A reference to a missing row: PostgreSQL's COPY refuses it; SQLite checks the
    // foreign keys of a restore once, before its commit.
    const dangling = structuredClone(before);
    dangling.node = [...dangling.node!, { ...dangling.node![0]!, id: '00000000-0000-4000-8000-00000000dead', name: 'dangling', config_id: '00000000-0000-4000-8000-00000000beef' }];
    await expect(replace(dangling)).rejects.toBeInstanceOf(ForeignKeyConstraintViolationException);
    expect(await businessRows(app)).toEqual(before);
    // And every other write still has its foreign keys checked by each statement.
    await expect(
      app.uow.write((em) => em.execute(
          `insert into mqtt_credential (id, node_id, username, client_id, password_hash, salt, rotated_at) ` +
            `values ('00000000-0000-4000-8000-00000000cafe', '00000000-0000-4000-8000-00000000dead', 'x', 'x', 'x', 'x', current_timestamp)`,
        )),
    ).rejects.toBeInstanceOf(ForeignKeyConstraintViolationException);
    // The file cannot be decoded after the deletes were sent.
    await expect(
      replace(() => {
        throw new Error('not a snapshot');
      }),
    ).rejects.toThrow('not a snapshot');
    expect(await businessRows(app)).toEqual(before);
    // On PostgreSQL only an exclusive write transaction may replace the data (operations
    // take the lock shared and could interleave); SQLite has one writer at a time anyway.
    const shared = app.uow.write((em, tx) => createRepositories(em, { serverKey: app.serverKey, tx }).snapshots.replaceBusinessData({}));
    if (dialect === 'postgresql') await expect(shared).rejects.toThrow(/exclusive write transaction/);
    else await shared;
    if (dialect === 'sqlite') expect(Object.values(await businessRows(app)).every((rows) => rows.length === 0)).toBe(true);
    else expect(await businessRows(app)).toEqual(before);
    // Later transactions, exclusive or not, run normally.
    await replace(before);
    await app.uow.write((em) => createRepositories(em, { serverKey: app.serverKey }).snapshots.appliedMigrations());
    expect(await businessRows(app)).toEqual(before);
  });

  it('writes empty tables', async () => {
    await app.uow.write((em, tx) => createRepositories(em, { serverKey: app.serverKey, tx }).snapshots.replaceBusinessData({}), { exclusive: true });
    const kdf = newKdfParams(TEST_KDF);
    const key = await deriveKey('pw', kdf);
    const payload = decodeSnapshot(await exportFile(key, kdf), key);
    expect(Object.values(payload.tables).every((rows) => rows.length === 0)).toBe(true);
    expect(Object.values(payload.counts).every((n) => n === 0)).toBe(true);
  });
});
