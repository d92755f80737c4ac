/**
 * The streamed-snapshot test's child process (test/integration/snapshots-memory.test.ts),
 * started with a small --max-old-space-size: it seeds a database with a snapshot larger
 * than that heap (rows streamed in), exports it as the export job does (compressed into a
 * spool file, encrypted as it is stored in pieces), reads it back as a download does into
 * a file as the API spools an upload, checks and stages it from there as the API does,
 * restores it as the restore job does (the pieces read back from the database, rows
 * streamed into one exclusive transaction) and prints a digest of the business rows
 * before and after.
 * Anything on the way that held the whole file, its text or its rows would run out of heap
 * and end this process.
 *
 *   node --max-old-space-size=64 --import tsx test/support/snapshot-memory-child.ts
 *   env: DATABASE_URL, SECRET_KEY, MEMORY_AUDIT_ROWS (rows of ~3 KB each)
 */
import { createHash, randomBytes } from 'node:crypto';
import { getHeapStatistics } from 'node:v8';
import { v7 as uuidv7 } from 'uuid';
import { loadConfig } from '../../src/config.js';
import { deriveKey, newKdfParams } from '../../src/crypto.js';
import { migrateUnderLock } from '../../src/db/migrate.js';
import { connectOrm, type Em } from '../../src/db/orm.js';
import { UnitOfWork, type WriteTransaction } from '../../src/db/unit-of-work.js';
import { LATEST_SCHEMA_VERSION } from '../../src/migrations/index.js';
import { createRepositories } from '../../src/repositories/index.js';
import type { SnapshotJsonSink } from '../../src/repositories/snapshot-rows.js';
import { exportEnvelope } from '../../src/snapshots/export.js';
import { openUpload, restoreStaged } from '../../src/snapshots/restore.js';
import { SpoolFile } from '../../src/snapshots/spool.js';
import { SnapshotWriter } from '../../src/snapshots/writer.js';
import { generateBusinessTables } from './snapshot-data.js';

const PASSWORD = 'memory-test-password';
const AUDIT_ROWS = Number(process.env.MEMORY_AUDIT_ROWS ?? 30_000);
const BATCH = 500;

const config = loadConfig({ ...process.env, LOG_LEVEL: 'silent' });
const serverKey = Buffer.from(config.secretKey, 'hex');
const orm = await connectOrm(config);
await migrateUnderLock(orm, config);
const uow = new UnitOfWork(orm, config.dialect);
const repos = (em: Em, tx?: WriteTransaction) => createRepositories(em, { serverKey, tx });

/** A digest of every business row as the export reads them (deterministic: rows in key order). */
class DigestSink implements SnapshotJsonSink {
  readonly hash = createHash('sha256');
  table(name: string): void {
    this.hash.update(`\n${name}:`);
  }
  rows(text: string): undefined {
    this.hash.update(text);
    return undefined;
  }
  rowBytes(bytes: Buffer): undefined {
    this.hash.update(bytes);
    return undefined;
  }
}
const digest = async (): Promise<string> => (await uow.write((em, tx) => repos(em, tx).snapshots.writeBusinessTablesJson(new DigestSink()))).hash.digest('hex');

// Seed: a small mesh, and audit records whose details make the file larger than the heap,
// streamed into the database batch by batch.
const small = generateBusinessTables({ configs: 1, nodesPerConfig: 60, neighbours: 4, audit: 0, serverKey });
await uow.write(
  (em, tx) =>
    repos(em, tx).snapshots.replaceBusinessData(async (load) => {
      const specs = repos(em, tx).snapshots.tableSpecs();
      await load.total(AUDIT_ROWS);
      for (const spec of specs) {
        if (spec.table !== 'audit_record') {
          if ((small[spec.table] ?? []).length > 0) await load.rows(spec, small[spec.table]!);
          continue;
        }
        for (let at = 0; at < AUDIT_ROWS; at += BATCH) {
          const rows = [];
          for (let i = at; i < Math.min(AUDIT_ROWS, at + BATCH); i++) {
            rows.push({
              id: uuidv7(),
              at: new Date(Date.UTC(2026, 0, 1) + i * 1000 + 7).toISOString(),
              actor: 'admin',
              action: 'node.update',
              entity_type: 'node',
              entity_id: null,
              detail: { n: i, blob: randomBytes(2304).toString('base64') },
            });
          }
          await load.rows(spec, rows);
        }
      }
    }),
  { exclusive: true },
);
const before = await digest();

const kdf = newKdfParams({ N: 2 ** 10 });
const key = await deriveKey(PASSWORD, kdf);
const specs = await uow.read(async (em) => repos(em).snapshots.tableSpecs());

// The export job's path: rows compressed into a spool file, encrypted as they are stored
// in pieces (src/jobs/processors/snapshots.ts).
const exported = await uow.write(async (em, tx) => {
  const writer = new SnapshotWriter(exportEnvelope(LATEST_SCHEMA_VERSION), key, kdf);
  try {
    await repos(em, tx).snapshots.writeBusinessTablesJson(writer);
    const file = await writer.finish();
    return await repos(em, tx).snapshots.storeArchive({ kind: 'export', data: file.bytes, schemaVersion: LATEST_SCHEMA_VERSION, counts: writer.counts });
  } finally {
    await writer.discard();
  }
});
const fileBytes = exported.size;

// Downloaded (the route streams the stored pieces) into a file, as the API spools an upload.
const upload = await SpoolFile.create('meshq-memory-test-');
let uploaded = 0;
for await (const piece of repos(uow.fork()).snapshots.archiveBytes(exported)) {
  await upload.append(piece);
  uploaded += piece.length;
}
await upload.close();

// The API's check (here in this small heap rather than in its worker thread) and staging,
// both reading the spool file as a stream.
const checked = await openUpload({ size: upload.size, read: () => upload.read() }, PASSWORD, specs, serverKey);
const staged = await uow.write((em, tx) =>
  repos(em, tx).snapshots.storeArchive({ kind: 'staged', data: upload.read(), schemaVersion: checked.meta.schemaVersion, counts: checked.meta.counts, sealedKey: checked.sealedKey }),
);
await upload.remove();

// The restore job's path: the staged pieces read back from the database, rows streamed in.
const restored = await uow.write(
  (em, tx) => {
    const r = repos(em, tx);
    return r.snapshots.replaceBusinessData(async (load) => {
      await restoreStaged(() => r.snapshots.archiveBytes(staged), checked.sealedKey, serverKey, specs, {
        begin: (meta) => load.total(Object.values(meta.counts).reduce((a, b) => a + b, 0)),
        rows: (spec, rows) => load.rows(spec, rows),
      });
    });
  },
  { exclusive: true },
);
const after = await digest();
await orm.close(true);

process.stdout.write(
  `${JSON.stringify({ before, after, fileBytes, uploaded, stagedBytes: staged.size, sameFile: staged.sha256 === exported.sha256, restored, heapLimit: getHeapStatistics().heap_size_limit, maxRss: process.resourceUsage().maxRSS * 1024 })}\n`,
);
