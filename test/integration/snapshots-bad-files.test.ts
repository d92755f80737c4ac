/**
 * Every upload that cannot be restored is refused by the API with 400 and a reason a
 * person can act on, and nothing changes: the database is byte-for-byte the same
 * (SQLite: the file's hash; PostgreSQL: a dump of every table), nothing is staged and no
 * job is enqueued.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createGzip, gzipSync } from 'node:zlib';
import pg from 'pg';
import { LATEST_SCHEMA_VERSION } from '../../src/migrations/index.js';
import { deriveKey, newKdfParams } from '../../src/crypto.js';
import { encryptSnapshotBody } from '../../src/snapshots/container.js';
import type { SnapshotTables } from '../../src/snapshots/tables.js';
import { QUEUES } from '../../src/jobs/names.js';
import { DIALECTS } from '../support/db.js';
import { encodeTestSnapshot, generateBusinessTables, multipartBody, TEST_KDF, uploadSnapshot } from '../support/snapshot-data.js';
import { startStack, type Stack } from '../support/stack.js';

const PASSWORD = 'file-password-1';

/** Everything in the database, as bytes: SQLite's files, or every row of every PostgreSQL table. */
async function databaseFingerprint(s: Stack): Promise<string> {
  if (s.db.dialect === 'sqlite') {
    const path = s.app.config.sqlitePath!;
    const hash = createHash('sha256').update(readFileSync(path));
    if (existsSync(`${path}-wal`)) hash.update(readFileSync(`${path}-wal`));
    return hash.digest('hex');
  }
  const client = new pg.Client({ connectionString: s.db.url });
  await client.connect();
  try {
    const tables = await client.query<{ table_name: string }>("select table_name from information_schema.tables where table_schema = 'public' order by table_name");
    const dump: Record<string, unknown> = {};
    for (const { table_name } of tables.rows) {
      dump[table_name] = (await client.query(`select * from "${table_name}" order by 1`)).rows;
    }
    return JSON.stringify(dump);
  } finally {
    await client.end();
  }
}

/**
 * gzip of a valid-looking payload whose rows array is `spaces` bytes of whitespace: JSON
 * that would parse if it were ever inflated, so only its size can refuse it. Compressed
 * as a stream, so building it never holds the inflated text.
 */
async function gzipBomb(spaces: number): Promise<Buffer> {
  const gzip = createGzip({ level: 9 });
  const out: Buffer[] = [];
  gzip.on('data', (chunk: Buffer) => out.push(chunk));
  const ended = new Promise((resolve) => gzip.on('end', resolve));
  const head = { formatVersion: 1, schemaVersion: LATEST_SCHEMA_VERSION, appVersion: '0.1.0', createdAt: new Date().toISOString(), counts: { node: 0 } };
  gzip.write(`${JSON.stringify(head).slice(0, -1)},"tables":{"node":[`);
  const blank = Buffer.alloc(1024 * 1024, 0x20);
  for (let written = 0; written < spaces; written += blank.length) {
    if (!gzip.write(blank)) await new Promise((resolve) => gzip.once('drain', resolve));
  }
  gzip.end(']}}');
  await ended;
  return Buffer.concat(out);
}

/** Built once for both dialects: compressing 512 MiB takes a while. */
let bombBody: Buffer | undefined;

async function encryptBody(body: Buffer, password: string): Promise<Buffer> {
  const kdf = newKdfParams(TEST_KDF);
  return encryptSnapshotBody(body, await deriveKey(password, kdf), kdf);
}

describe.each(DIALECTS)('refused snapshot uploads on %s', (dialect) => {
  let s: Stack;
  let good: SnapshotTables;
  let goodFile: Buffer;
  let before: string;

  beforeAll(async () => {
    s = await startStack(dialect, 'snap_bad', { adminPassword: 'bad-files-admin' });
    expect((await s.job('config.create', { name: 'keep-me', subnet: '10.1.0.0/24' })).state).toBe('completed');
    good = generateBusinessTables({ configs: 1, nodesPerConfig: 5 });
    goodFile = await encodeTestSnapshot(good, PASSWORD);
    before = await databaseFingerprint(s);
  });
  afterAll(async () => {
    await s?.stop();
  });

  const withTables = (edit: (t: SnapshotTables) => void): SnapshotTables => {
    const t = structuredClone(good);
    edit(t);
    return t;
  };

  const cases: [string, () => Promise<{ file: Buffer; password?: string }>, string, RegExp][] = [
    ['a wrong password', async () => ({ file: goodFile, password: 'not-the-password' }), 'auth_failed', /wrong password or the file was modified/],
    ['a tampered byte', async () => {
      const file = Buffer.from(goodFile);
      file[file.length - 40]! ^= 0x01;
      return { file };
    }, 'auth_failed', /wrong password or the file was modified/],
    ['a truncated file', async () => ({ file: goodFile.subarray(0, goodFile.length - 100) }), 'truncated', /file is truncated: the snapshot needs \d+ bytes, the file has \d+/],
    ['an empty file', async () => ({ file: Buffer.alloc(0) }), 'truncated', /empty/],
    ['appended bytes', async () => ({ file: Buffer.concat([goodFile, Buffer.from('xx')]) }), 'trailing_data', /2 unexpected bytes/],
    ['garbage', async () => ({ file: randomBytes(4096) }), 'not_snapshot', /not a meshq snapshot/],
    ['a text file', async () => ({ file: Buffer.from('{"tables": {}}') }), 'not_snapshot', /does not start with "MESHQSNP"/],
    ['an unknown format version', async () => {
      const file = Buffer.from(goodFile);
      file.writeUInt16BE(7, 8);
      return { file };
    }, 'unsupported_version', /format version 7 is newer than this meshq understands \(1\)/],
    ['contents that are not gzip', async () => ({ file: await encryptBody(Buffer.from('plain, not gzip'), PASSWORD) }), 'bad_compression', /not valid gzip/],
    ['contents that are not JSON', async () => ({ file: await encryptBody(gzipSync('{"oops"'), PASSWORD) }), 'bad_json', /not valid JSON/],
    ['counts that do not match the rows', async () => {
      const body = JSON.parse(JSON.stringify({ formatVersion: 1, schemaVersion: LATEST_SCHEMA_VERSION, appVersion: '0.1.0', createdAt: new Date().toISOString(), counts: { node: 9 }, tables: { node: [] } }));
      return { file: await encryptBody(gzipSync(JSON.stringify(body)), PASSWORD) };
    }, 'bad_payload', /count 9 does not match 0 rows in tables.node/],
    ['a newer schema', async () => ({ file: await encodeTestSnapshot(good, PASSWORD, 'Migration29991231000000_from_the_future') }), 'schema_too_new',
      new RegExp(`^snapshot schema Migration29991231000000_from_the_future is newer than this meshq \\(${LATEST_SCHEMA_VERSION}\\); upgrade meshq first$`)],
    ['an unknown schema', async () => ({ file: await encodeTestSnapshot(good, PASSWORD, 'Migration20200101000000_other_branch') }), 'schema_unknown', /is not a schema version of this meshq/],
    ['a missing table', async () => ({ file: await encodeTestSnapshot(withTables((t) => delete t.audit_record), PASSWORD) }), 'bad_payload', /missing tables: audit_record/],
    ['a dangling foreign key', async () => ({
      file: await encodeTestSnapshot(withTables((t) => (t.node![2]!.config_id = '01900000-0000-7000-8000-0000000000ff')), PASSWORD),
    }), 'constraint_violation', /^rows break a constraint: table node row 3 \(id [0-9a-f-]+\): column config_id = "01900000-0000-7000-8000-0000000000ff" is no id in table mesh_config/],
    ['a duplicate unique value', async () => ({
      file: await encodeTestSnapshot(withTables((t) => (t.mqtt_credential![1]!.username = t.mqtt_credential![0]!.username)), PASSWORD),
    }), 'constraint_violation', /^rows break a constraint: table mqtt_credential row 2 .*unique mqtt_credential_username_unique \(username\)/],
    ['a value of the wrong type', async () => ({
      file: await encodeTestSnapshot(withTables((t) => (t.port_forward_rule![0]!.to_port = '80')), PASSWORD),
    }), 'constraint_violation', /^rows break a constraint: table port_forward_rule row 1 .*column to_port: .*expected number/],
    ['node keys sealed under another SECRET_KEY', async () => ({
      file: await encodeTestSnapshot(generateBusinessTables({ configs: 1, nodesPerConfig: 3, serverKey: Buffer.alloc(32, 9) }), PASSWORD),
    }), 'secret_key_mismatch', /^3 of 3 values of node.private_key_enc do not open with this server's SECRET_KEY/],
    ['a missing required column', async () => ({
      file: await encodeTestSnapshot(withTables((t) => delete t.node![0]!.public_key), PASSWORD),
    }), 'constraint_violation', /^rows break a constraint: table node row 1 .*column public_key: is missing/],
  ];

  it.each(cases)('refuses %s with 400 and the reason, changing nothing', async (_name, make, reason, message) => {
    const { file, password } = await make();
    const res = await uploadSnapshot(s.api, s.auth, file, password ?? PASSWORD);
    expect(res.statusCode, res.body).toBe(400);
    const { error } = res.json<{ error: { code: string; message: string; details: { reason: string } } }>();
    expect(error.code).toBe('SNAPSHOT_INVALID');
    expect(error.details.reason).toBe(reason);
    expect(error.message).toMatch(message);
    expect(await databaseFingerprint(s)).toBe(before);
  });

  it('refuses a gzip bomb inside a correctly encrypted file as too_large, off the event loop: RSS stays flat and /healthz answers meanwhile', async () => {
    // 512 MiB of JSON whitespace: about half a MiB once compressed, sealed with the real
    // container code under the administrator's own password.
    bombBody ??= await gzipBomb(512 * 1024 * 1024);
    const bomb = await encryptBody(bombBody, 'bad-files-admin');
    expect(bomb.length).toBeLessThan(1024 * 1024);
    // Check threads start with the first upload and are kept; start them first, so what is
    // measured is the bomb's own cost.
    expect((await uploadSnapshot(s.api, s.auth, goodFile, 'not-the-password')).statusCode).toBe(400);

    const rssBefore = process.memoryUsage().rss;
    let peak = rssBefore;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
    let settled = false;
    const upload = uploadSnapshot(s.api, s.auth, bomb, 'bad-files-admin').finally(() => (settled = true));
    const health: number[] = [];
    try {
      while (!settled) {
        const started = performance.now();
        const res = await s.api.inject({ method: 'GET', url: '/healthz' });
        expect(res.statusCode).toBe(200);
        if (!settled) health.push(performance.now() - started);
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    } finally {
      clearInterval(sampler);
    }
    const res = await upload;
    peak = Math.max(peak, process.memoryUsage().rss);

    expect(res.statusCode, res.body).toBe(400);
    const { error } = res.json<{ error: { code: string; message: string; details: { reason: string } } }>();
    expect(error.details.reason).toBe('too_large');
    expect(error.message).toMatch(/zip bomb/);
    expect(peak - rssBefore).toBeLessThan(100 * 1024 * 1024);
    // The API answered while the file was being checked, and promptly.
    expect(health.length).toBeGreaterThan(0);
    expect(Math.max(...health)).toBeLessThan(1000);
    expect(await databaseFingerprint(s)).toBe(before);
  });

  it('refuses KDF parameters above the bound from the header alone, before deriving any key', async () => {
    // N = 2^18, r = 8, p = 2^20: 256 MiB per lane and days of scrypt, far above what meshq
    // writes. Patched into a good file's header: the check must stop at the header. Had
    // any key been derived from these parameters, no answer would come within the test's
    // timeout (no clock is read: a loaded machine does not make this fail).
    const costly = Buffer.from(goodFile);
    costly.writeUInt32BE(2 ** 18, 13);
    costly.writeUInt32BE(2 ** 20, 21);
    const res = await uploadSnapshot(s.api, s.auth, costly, PASSWORD);
    expect(res.statusCode, res.body).toBe(400);
    const { error } = res.json<{ error: { message: string; details: { reason: string } } }>();
    expect(error.details.reason).toBe('bad_header');
    expect(error.message).toMatch(/scrypt N must be a power of two between 2 and 65536 \(got 262144\)/);
    expect(await databaseFingerprint(s)).toBe(before);
  });

  it('refuses a request without the file, without the password, or not multipart', async () => {
    const noFile = multipartBody([{ name: 'password', value: PASSWORD }]);
    const noPassword = multipartBody([{ name: 'file', value: goodFile, filename: 'x.meshq' }]);
    for (const body of [noFile, noPassword]) {
      const res = await s.call({ method: 'POST', url: '/api/v1/snapshots/restore', payload: body.payload, headers: body.headers });
      expect(res.statusCode, res.body).toBe(400);
      expect(res.json().error.message).toMatch(/"(file|password)" (part|field) is missing/);
    }
    const json = await s.call({ method: 'POST', url: '/api/v1/snapshots/restore', payload: { password: PASSWORD } });
    expect(json.statusCode).toBe(400);
    expect(json.json().error.message).toMatch(/multipart\/form-data/);
    const anonymous = await s.api.inject({ method: 'POST', url: '/api/v1/snapshots/restore', payload: noFile.payload, headers: noFile.headers });
    expect(anonymous.statusCode).toBe(401);
    expect(await databaseFingerprint(s)).toBe(before);
  });

  it('staged nothing and enqueued no restore for any of them', async () => {
    const counts = await s.app.queues.queue(QUEUES.snapshotRestore).getJobCounts('waiting', 'active', 'delayed', 'completed', 'failed');
    expect(Object.values(counts).every((n) => n === 0)).toBe(true);
    // The control: the same file with the right password is accepted.
    const res = await uploadSnapshot(s.api, s.auth, goodFile, PASSWORD, '?wait=20000');
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().state).toBe('completed');
    // ...and the fingerprint does see a change.
    expect(await databaseFingerprint(s)).not.toBe(before);
  });
});
