/**
 * Stored snapshot files move from one blob per file to pieces
 * (Migration20261201181000_snapshot_chunks): files stored before the migration read back
 * byte for byte after it, through the same streamed read as new ones (the restore's and
 * the download's), and going back down puts each file together again.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectOrm, type Em, type Orm } from '../../src/db/orm.js';
import { migrateUnderLock } from '../../src/db/migrate.js';
import { newId } from '../../src/domain/ids.js';
import { MIGRATIONS } from '../../src/migrations/index.js';
import { ARCHIVE_CHUNK_BYTES } from '../../src/repositories/snapshot-archives.js';
import { createRepositories } from '../../src/repositories/index.js';
import { createTestDatabase, DIALECTS, TEST_SECRET_KEY, type TestDatabase } from '../support/db.js';
import { gather } from '../support/snapshot-bytes.js';

const BEFORE = MIGRATIONS.findIndex((m) => m.name === 'Migration20261201181000_snapshot_chunks') - 1;

describe.each(DIALECTS)('stored snapshot files across the move to pieces on %s', (dialect) => {
  let db: TestDatabase;
  let orm: Orm;

  beforeAll(async () => {
    db = await createTestDatabase(dialect, 'snapshot_chunks');
    orm = await connectOrm(db.config());
  });
  afterAll(async () => {
    await orm?.close(true);
    await db?.drop();
  });

  it('reads files stored as one blob byte for byte after the migration, and puts them back together going down', async () => {
    await orm.migrator.up({ to: MIGRATIONS[BEFORE]!.name });
    const conn = orm.em.getConnection();
    // Sizes around the piece size: several pieces and a short last one, exactly one piece, one byte.
    const files = [2 * ARCHIVE_CHUNK_BYTES + 12_345, ARCHIVE_CHUNK_BYTES, 1].map((size) => ({ id: newId(), data: randomBytes(size) }));
    const at = new Date('2026-01-02T03:04:05.678Z');
    for (const [i, f] of files.entries()) {
      await conn.execute(
        'insert into snapshot_archive (id, kind, created_at, size, sha256, schema_version, counts, sealed_key, data) values (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        [f.id, i === 0 ? 'export' : 'staged', dialect === 'sqlite' ? at.getTime() : at.toISOString(), f.data.length, 'e'.repeat(64), 'x', '{}', i === 0 ? null : 'sealed', f.data],
      );
    }

    await migrateUnderLock(orm, db.config());
    const repos = createRepositories(orm.em.fork() as Em, { serverKey: Buffer.from(TEST_SECRET_KEY, 'hex') });
    for (const f of files) expect((await gather(repos.snapshots.archiveBytes({ id: f.id, size: f.data.length }))).equals(f.data)).toBe(true);
    expect(await repos.snapshots.getExport(files[0]!.id)).toMatchObject({ size: files[0]!.data.length });

    await orm.migrator.down({ to: MIGRATIONS[BEFORE]!.name });
    for (const f of files) {
      const [row] = await conn.execute<{ data: Buffer }[]>('select data from snapshot_archive where id = ?', [f.id]);
      expect(Buffer.from(row!.data).equals(f.data)).toBe(true);
    }
    await migrateUnderLock(orm, db.config());
  });
});
