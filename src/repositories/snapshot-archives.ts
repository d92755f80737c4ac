/**
 * Stored snapshot files (exports and staged uploads) in `snapshot_archive`: the bytes as
 * written (encrypted), never a key in the clear.
 */
import { createHash } from 'node:crypto';
import type { Em } from '../db/orm.js';
import { boundSql, type BoundSql } from '../db/sql.js';
import { pgPool } from '../db/pg-client.js';
import { isPostgres } from '../migrations/dialect.js';
import type { TransactionHandle } from '../db/unit-of-work.js';
import { SnapshotArchive } from '../domain/entities/system.js';
import { newId } from '../domain/ids.js';
import { idCursor, pageLimit, toPage, type Page, type PageRequest } from '../domain/paging.js';

type ArchiveKind = 'export' | 'staged';

/** A stored file as the API shows it (never its bytes, never a key). */
export interface SnapshotView {
  id: string;
  kind: ArchiveKind;
  createdAt: string;
  size: number;
  sha256: string;
  schemaVersion: string;
  counts: Record<string, number>;
}

interface StagedSnapshot extends SnapshotView {
  sealedKey: string;
}

/**
 * Bytes of a stored file read per query on PostgreSQL. A bytea as one value would arrive
 * as hex text, a JS string twice the file's size; in slices (sent as base64, the most
 * compact text) a file of any size streams through a bounded buffer.
 */
const PG_SLICE_BYTES = 1024 * 1024;

const view = (a: SnapshotArchive): SnapshotView => ({
  id: a.id,
  kind: a.kind as ArchiveKind,
  createdAt: a.createdAt.toISOString(),
  size: a.size,
  sha256: a.sha256,
  schemaVersion: a.schemaVersion,
  counts: a.counts,
});

/** Drivers hand blobs back as Buffer (pg, better-sqlite3); the entity type also allows Uint8Array. */
const asBuffer = (data: Uint8Array | Buffer): Buffer => (Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength));

export class SnapshotArchiveRepository {
  /** Bound statements: on the write transaction's own connection when there is one. */
  protected readonly sql: BoundSql;

  constructor(
    protected readonly em: Em,
    tx?: TransactionHandle,
  ) {
    this.sql = tx?.sql ?? boundSql(em);
  }

  /** Stores a file (export or staged upload); returns its view. */
  async storeArchive(file: {
    kind: ArchiveKind;
    data: Buffer;
    schemaVersion: string;
    counts: Record<string, number>;
    sealedKey?: string | null;
    createdAt?: Date;
  }): Promise<SnapshotView> {
    const row = {
      id: newId(),
      kind: file.kind,
      createdAt: file.createdAt ?? new Date(),
      size: file.data.length,
      sha256: createHash('sha256').update(file.data).digest('hex'),
      schemaVersion: file.schemaVersion,
      counts: file.counts,
      sealedKey: file.sealedKey ?? null,
    };
    // One INSERT with the file as a bound parameter (bytea / blob, sent as binary): the
    // ORM would write the bytes into the SQL text as hex, twice their size to build, send
    // and parse again; on an 8 MiB export that was a quarter of a second.
    await this.sql.query(
      'insert into snapshot_archive (id, kind, created_at, size, sha256, schema_version, counts, sealed_key, data) values (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      [row.id, row.kind, row.createdAt, row.size, row.sha256, row.schemaVersion, row.counts, row.sealedKey, file.data],
    );
    return { ...row, createdAt: row.createdAt.toISOString() } as SnapshotView;
  }

  /** Stored exports, newest first. */
  async listExports(req: PageRequest = {}): Promise<Page<SnapshotView>> {
    const limit = pageLimit(req);
    const cursor = idCursor(req);
    const rows = await this.em.find(SnapshotArchive, { kind: 'export', ...(cursor ? { id: { $lt: cursor } } : {}) }, {
      orderBy: { id: 'desc' },
      limit: limit + 1,
    });
    return toPage(rows, limit, (r) => r.id, view);
  }

  async getExport(id: string): Promise<SnapshotView | undefined> {
    const row = await this.em.findOne(SnapshotArchive, { id, kind: 'export' });
    return row ? view(row) : undefined;
  }

  /** A staged upload's metadata and sealed key; its bytes through archiveBytes. */
  async getStaged(id: string): Promise<StagedSnapshot | undefined> {
    const row = await this.em.findOne(SnapshotArchive, { id, kind: 'staged' });
    if (!row?.sealedKey) return undefined;
    return { ...view(row), sealedKey: row.sealedKey };
  }

  /**
   * A stored file's bytes, as they are read. PostgreSQL: slices of the bytea, each its own
   * query on the pool (never on a transaction's connection, which a restore's COPY holds;
   * stored files never change, and one deleted meanwhile ends the stream with an error).
   * SQLite: the blob in one piece, a Buffer outside the JS heap (slicing a blob makes
   * SQLite read it whole for every slice).
   */
  async *archiveBytes(file: { id: string; size: number }): AsyncGenerator<Buffer> {
    if (!isPostgres(this.em.getDriver())) {
      const { rows } = await this.sql.query<{ data: Uint8Array }>('select data from snapshot_archive where id = ?', [file.id]);
      if (!rows[0]) throw new Error(`snapshot file ${file.id} is gone`);
      yield asBuffer(rows[0].data);
      return;
    }
    const pool = await pgPool(this.em);
    for (let at = 0; at < file.size; at += PG_SLICE_BYTES) {
      const length = Math.min(PG_SLICE_BYTES, file.size - at);
      const { rows } = await pool.query<{ data: string }>(
        "select encode(substring(data from $2::int for $3::int), 'base64') as data from snapshot_archive where id = $1",
        [file.id, at + 1, length],
      );
      const slice = rows[0] ? Buffer.from(rows[0].data, 'base64') : undefined;
      if (!slice || slice.length !== length) throw new Error(`snapshot file ${file.id} is gone or shorter than its ${file.size} bytes`);
      yield slice;
    }
  }

  async deleteArchive(id: string): Promise<void> {
    await this.em.nativeDelete(SnapshotArchive, { id });
  }

  /** Keeps the newest `keep` exports (SNAPSHOT_KEEP); returns how many were removed. */
  async pruneExports(keep: number): Promise<number> {
    const old = await this.em.find(SnapshotArchive, { kind: 'export' }, { orderBy: { id: 'desc' }, offset: keep, limit: 10_000, fields: ['id'] });
    if (old.length === 0) return 0;
    return this.em.nativeDelete(SnapshotArchive, { id: { $in: old.map((r) => r.id) } });
  }

  /** Staged uploads nobody restored (a failed or abandoned restore) do not live forever. */
  async pruneStaged(olderThan: Date): Promise<number> {
    return this.em.nativeDelete(SnapshotArchive, { kind: 'staged', createdAt: { $lt: olderThan } });
  }
}
