/**
 * Stored snapshot files (exports and staged uploads): their metadata in `snapshot_archive`,
 * their bytes as written (encrypted) in `snapshot_archive_chunk`, a bounded piece per row,
 * written and read as streams, so a file of any size costs a piece of memory at a time.
 * Never a key in the clear.
 */
import { createHash } from 'node:crypto';
import type { Em } from '../db/orm.js';
import { boundSql, type BoundSql } from '../db/sql.js';
import { pgPool } from '../db/pg-client.js';
import { isPostgres } from '../migrations/dialect.js';
import type { TransactionHandle } from '../db/unit-of-work.js';
import { SnapshotArchive, SnapshotArchiveChunk } from '../domain/entities/system.js';
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
 * Bytes per stored piece (the migration that made the table cut older files the same way).
 * Large enough that a file is a few dozen rows, small enough that a piece in flight is
 * nothing next to the process's memory.
 */
export const ARCHIVE_CHUNK_BYTES = 1024 * 1024;

/**
 * SQLite: a stored file at least this large has its commit's WAL checkpoint run in a
 * thread (WriteTransaction.checkpointAfterCommit): the commit would otherwise copy the
 * whole file from the WAL into the database and sync it on the calling thread, the API's
 * event loop for a staged upload. Below it the WAL stays under its automatic checkpoint's
 * size (1,000 pages) and a thread would cost more than the checkpoint.
 */
const CHECKPOINT_AFTER_BYTES = 4 * 1024 * 1024;

/** A file's bytes as they come: an export being encrypted, an upload read from its spool file. */
export type ArchiveBytes = AsyncIterable<Buffer | Uint8Array>;

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
    protected readonly tx?: TransactionHandle,
  ) {
    this.sql = tx?.sql ?? boundSql(em);
  }

  /**
   * Stores a file (export or staged upload) from its bytes as they come, in pieces of
   * ARCHIVE_CHUNK_BYTES, in the caller's transaction; returns its view. The pieces go in
   * first and the metadata row last, once its size and hash are known: a failure half-way
   * rolls back with the transaction and leaves no row that names a partial file.
   */
  async storeArchive(file: {
    kind: ArchiveKind;
    data: ArchiveBytes;
    schemaVersion: string;
    counts: Record<string, number>;
    sealedKey?: string | null;
    createdAt?: Date;
  }): Promise<SnapshotView> {
    const id = newId();
    const hash = createHash('sha256');
    let size = 0;
    let seq = 0;
    // Each piece is one INSERT with the bytes as a bound parameter (bytea / blob, sent as
    // binary): the ORM would write them into the SQL text as hex, twice their size.
    const put = (piece: Buffer) =>
      this.sql.query('insert into snapshot_archive_chunk (archive_id, seq, data) values (?, ?, ?)', [id, seq++, piece]);
    let held: Buffer[] = [];
    let heldBytes = 0;
    for await (const bytes of file.data) {
      let chunk = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      hash.update(chunk);
      size += chunk.length;
      while (heldBytes + chunk.length >= ARCHIVE_CHUNK_BYTES) {
        const take = ARCHIVE_CHUNK_BYTES - heldBytes;
        held.push(chunk.subarray(0, take));
        await put(held.length === 1 ? held[0]! : Buffer.concat(held, ARCHIVE_CHUNK_BYTES));
        chunk = chunk.subarray(take);
        held = [];
        heldBytes = 0;
      }
      if (chunk.length > 0) {
        // Copied: a stream may reuse the memory of what it handed out.
        held.push(Buffer.from(chunk));
        heldBytes += chunk.length;
      }
    }
    if (heldBytes > 0) await put(Buffer.concat(held, heldBytes));
    if (size >= CHECKPOINT_AFTER_BYTES) this.tx?.checkpointAfterCommit();
    const row = {
      id,
      kind: file.kind,
      createdAt: file.createdAt ?? new Date(),
      size,
      sha256: hash.digest('hex'),
      schemaVersion: file.schemaVersion,
      counts: file.counts,
      sealedKey: file.sealedKey ?? null,
    };
    await this.sql.query(
      'insert into snapshot_archive (id, kind, created_at, size, sha256, schema_version, counts, sealed_key) values (?, ?, ?, ?, ?, ?, ?, ?)',
      [row.id, row.kind, row.createdAt, row.size, row.sha256, row.schemaVersion, row.counts, row.sealedKey],
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
   * A stored file's bytes, piece by piece in order, as they are read: one query per piece.
   * PostgreSQL: on the pool, never on a transaction's connection, which a restore's COPY
   * holds (stored files never change, and one deleted meanwhile ends the stream with an
   * error); each piece comes as base64, the most compact text (a bytea value would arrive
   * as hex text, twice its size). SQLite: on the caller's connection, a Buffer outside the
   * JS heap.
   */
  async *archiveBytes(file: { id: string; size: number }): AsyncGenerator<Buffer> {
    const pieces = Math.ceil(file.size / ARCHIVE_CHUNK_BYTES);
    const pool = isPostgres(this.em.getDriver()) ? await pgPool(this.em) : undefined;
    let read = 0;
    for (let seq = 0; seq < pieces; seq++) {
      let piece: Buffer | undefined;
      if (pool) {
        const { rows } = await pool.query<{ data: string }>("select encode(data, 'base64') as data from snapshot_archive_chunk where archive_id = $1 and seq = $2", [file.id, seq]);
        piece = rows[0] ? Buffer.from(rows[0].data, 'base64') : undefined;
      } else {
        const { rows } = await this.sql.query<{ data: Uint8Array }>('select data from snapshot_archive_chunk where archive_id = ? and seq = ?', [file.id, seq]);
        piece = rows[0] ? asBuffer(rows[0].data) : undefined;
      }
      const expected = Math.min(ARCHIVE_CHUNK_BYTES, file.size - read);
      if (!piece || piece.length !== expected) throw new Error(`snapshot file ${file.id} is gone or not the ${file.size} bytes it was stored as`);
      read += piece.length;
      yield piece;
    }
  }

  async deleteArchive(id: string): Promise<void> {
    await this.deleteArchives([id]);
  }

  /** Keeps the newest `keep` exports (SNAPSHOT_KEEP); returns how many were removed. */
  async pruneExports(keep: number): Promise<number> {
    const old = await this.em.find(SnapshotArchive, { kind: 'export' }, { orderBy: { id: 'desc' }, offset: keep, limit: 10_000, fields: ['id'] });
    return this.deleteArchives(old.map((r) => r.id));
  }

  /** Staged uploads nobody restored (a failed or abandoned restore) do not live forever. */
  async pruneStaged(olderThan: Date): Promise<number> {
    const old = await this.em.find(SnapshotArchive, { kind: 'staged', createdAt: { $lt: olderThan } }, { limit: 10_000, fields: ['id'] });
    return this.deleteArchives(old.map((r) => r.id));
  }

  /** Files and their pieces, in the caller's transaction. */
  private async deleteArchives(ids: string[]): Promise<number> {
    if (ids.length === 0) return 0;
    await this.em.nativeDelete(SnapshotArchiveChunk, { archiveId: { $in: ids } });
    return this.em.nativeDelete(SnapshotArchive, { id: { $in: ids } });
  }
}
