/**
 * Stored snapshots and the jobs' refusals, through the real runner on both databases:
 * exports need an administrator (their key derives from the password), are kept by
 * SNAPSHOT_KEEP count, listed newest first and paged; staged uploads are consumed by their
 * restore and dropped after a day when never restored; restore payloads carry nothing
 * but a staged id. On SQLite the commit that stores a file of several megabytes (the API's
 * staging of an upload, an export) leaves its WAL checkpoint to a thread, off the calling
 * loop; a small one checkpoints as every commit does.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { randomBytes, randomUUID } from 'node:crypto';
import { UnrecoverableError } from 'bullmq';
import { pino } from 'pino';
import type { Config } from '../../src/config.js';
import { connectOrm, sqliteNative, type Orm } from '../../src/db/orm.js';
import { migrateUnderLock } from '../../src/db/migrate.js';
import { UnitOfWork } from '../../src/db/unit-of-work.js';
import { setAdminPassword } from '../../src/repositories/admin-account.js';
import { createRepositories, type Repositories } from '../../src/repositories/index.js';
import { LATEST_SCHEMA_VERSION } from '../../src/migrations/index.js';
import { openUpload } from '../../src/snapshots/restore.js';
import { piecesOf, uploadSource } from '../support/snapshot-bytes.js';
import type { JobType } from '../../src/jobs/table.js';
import { parseFailedReason } from '../../src/jobs/errors.js';
import { runJob } from '../../src/jobs/runner.js';
import { stageUpload } from '../../src/jobs/processors/snapshots.js';
import { createTestDatabase, DIALECTS, type TestDatabase } from '../support/db.js';
import { encodeTestSnapshot, generateBusinessTables } from '../support/snapshot-data.js';

describe.each(DIALECTS)('stored snapshots on %s', (dialect) => {
  let db: TestDatabase;
  let config: Config;
  let orm: Orm;
  let uow: UnitOfWork;
  let serverKey: Buffer;

  beforeAll(async () => {
    db = await createTestDatabase(dialect, 'snap_archive');
    config = db.config({ SNAPSHOT_KEEP: '2' });
    orm = await connectOrm(config);
    await migrateUnderLock(orm, config);
    uow = new UnitOfWork(orm, config.dialect);
    serverKey = Buffer.from(config.secretKey, 'hex');
  });
  afterAll(async () => {
    await orm?.close(true);
    await db?.drop();
  });

  const run = <R>(type: JobType, payload: unknown) =>
    // A restore holds the data lock exclusively: the runner reads that from its job table row.
    runJob({ uow, config, log: pino({ level: 'silent' }), serverKey, enqueue: async () => undefined }, { jobId: randomUUID(), type, envelope: { actor: 'admin', payload } }) as Promise<R>;
  const failure = async (type: JobType, payload: unknown) => {
    try {
      await run(type, payload);
    } catch (err) {
      if (err instanceof UnrecoverableError) return parseFailedReason(err.message)!;
      throw err;
    }
    throw new Error(`${type} succeeded`);
  };
  const repos = (): Repositories => createRepositories(uow.fork(), { serverKey });

  it('refuses to export before there is an administrator, saying what to do', async () => {
    const err = await failure('snapshot.export', {});
    expect(err.code).toBe('CONFLICT');
    expect(err.message).toMatch(/no administrator yet: .*ADMIN_PASSWORD|set-password/);
  });

  it('keeps SNAPSHOT_KEEP exports, newest first, paged', async () => {
    await setAdminPassword({ uow, serverKey }, 'archive-admin-password');
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push((await run<{ snapshotId: string }>('snapshot.export', {})).snapshotId);
    const page1 = await repos().snapshots.listExports({ limit: 1 });
    expect(page1.items.map((s) => s.id)).toEqual([ids[3]]);
    const page2 = await repos().snapshots.listExports({ limit: 1, cursor: page1.next });
    expect(page2.items.map((s) => s.id)).toEqual([ids[2]]);
    expect(page2.next).toBeNull();
    expect(page1.items[0]).toMatchObject({ kind: 'export', schemaVersion: LATEST_SCHEMA_VERSION, size: expect.any(Number), sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(await repos().snapshots.getExport(ids[0]!)).toBeUndefined();
  });

  it('consumes a staged upload with its restore, and refuses a restore of one that is gone', async () => {
    const tables = generateBusinessTables({ configs: 1, nodesPerConfig: 3 });
    const file = await encodeTestSnapshot(tables, 'pw-archive');
    const prepared = await openUpload(uploadSource(file), 'pw-archive', repos().snapshots.tableSpecs(), serverKey);
    const staged = await uow.write((em) =>
      createRepositories(em, { serverKey }).snapshots.storeArchive({ kind: 'staged', data: piecesOf(file), schemaVersion: prepared.meta.schemaVersion, counts: prepared.meta.counts, sealedKey: prepared.sealedKey }),
    );
    // Staged uploads are not exports: not listed, not downloadable.
    expect(await repos().snapshots.getExport(staged.id)).toBeUndefined();
    const result = await run<{ rows: Record<string, number> }>('snapshot.restore', { stagedId: staged.id });
    expect(result.rows.node).toBe(3);
    expect(await repos().snapshots.getStaged(staged.id)).toBeUndefined();

    const again = await failure('snapshot.restore', { stagedId: staged.id });
    expect(again.code).toBe('NOT_FOUND');
    expect(again.message).toMatch(/upload the file again/);
  });

  it('drops staged uploads older than a day when a restore runs', async () => {
    const file = await encodeTestSnapshot(generateBusinessTables({ configs: 1, nodesPerConfig: 2 }), 'pw-old');
    const store = (createdAt: Date) =>
      uow.write((em) => createRepositories(em, { serverKey }).snapshots.storeArchive({ kind: 'staged', data: piecesOf(file), schemaVersion: LATEST_SCHEMA_VERSION, counts: {}, sealedKey: 'x', createdAt }));
    const old = await store(new Date(Date.now() - 25 * 3600_000));
    const fresh = await store(new Date());
    const prepared = await openUpload(uploadSource(file), 'pw-old', repos().snapshots.tableSpecs(), serverKey);
    const toRestore = await uow.write((em) =>
      createRepositories(em, { serverKey }).snapshots.storeArchive({ kind: 'staged', data: piecesOf(file), schemaVersion: LATEST_SCHEMA_VERSION, counts: prepared.meta.counts, sealedKey: prepared.sealedKey }),
    );
    await run('snapshot.restore', { stagedId: toRestore.id });
    expect(await repos().snapshots.getStaged(old.id)).toBeUndefined();
    expect(await repos().snapshots.getStaged(fresh.id)).toBeDefined();
  });

  it('accepts nothing in a restore job but the staged id', async () => {
    const err = await failure('snapshot.restore', { stagedId: randomUUID(), password: 'never-here' });
    expect(err.code).toBe('INVALID');
    expect(err.message).not.toContain('never-here');
    expect((await failure('snapshot.restore', { stagedId: 'nope' })).code).toBe('INVALID');
    expect((await failure('snapshot.export', { what: 'everything' })).code).toBe('INVALID');
  });

  it("stores a file of several megabytes with its commit's checkpoint left to a thread on SQLite, a small one as before", async () => {
    const stage = (bytes: number) =>
      stageUpload({ uow, serverKey }, piecesOf(randomBytes(bytes), 256 * 1024), { meta: { schemaVersion: LATEST_SCHEMA_VERSION, counts: {} }, sealedKey: 'x' });
    const stored = async (id: string) => (await repos().snapshots.getStaged(id))?.size;
    if (dialect === 'postgresql') {
      const big = await stage(6 * 1024 * 1024);
      expect(await stored(big.id)).toBe(6 * 1024 * 1024);
      return;
    }
    const sqlite = await sqliteNative(orm);
    const autocheckpoint = () => sqlite.pragma('wal_autocheckpoint', { simple: true });
    // The restores above left their checkpoints to threads too: those are done first.
    await vi.waitFor(() => expect(autocheckpoint()).toBe(1000), { timeout: 30_000, interval: 20 });
    const small = await stage(512 * 1024);
    expect(autocheckpoint()).toBe(1000);
    // Committed with the connection's own checkpoint off until the thread has run it
    // (src/db/sqlite-checkpoint.ts); it is put back on this loop after the thread's exit.
    const big = await stage(6 * 1024 * 1024);
    expect(autocheckpoint()).toBe(0);
    await vi.waitFor(() => expect(autocheckpoint()).toBe(1000), { timeout: 30_000, interval: 20 });
    expect([await stored(small.id), await stored(big.id)]).toEqual([512 * 1024, 6 * 1024 * 1024]);
  });
});
