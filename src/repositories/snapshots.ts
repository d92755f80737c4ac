/**
 * Snapshots' side of the database: every business row out (one consistent read), every
 * business row in (delete all, insert in bulk, inside the restore's transaction), and
 * the stored files (exports and staged uploads) in `snapshot_archive`.
 *
 * Business rows never pass through the identity map: reads are plain SELECTs converted to
 * snapshot values (src/snapshots/tables.ts), or on PostgreSQL COPY text converted to the
 * file's JSON; writes are multi-row INSERTs with bound parameters (SQLite) or COPY FROM
 * STDIN (PostgreSQL). Hydrating 250,000 entities to copy them would cost several times the
 * work and the memory.
 */
import { createHash } from 'node:crypto';
import type { Em } from '../db/orm.js';
import type { PoolClient } from 'pg';
import { heldClientOf } from '../db/pg-client.js';
import { isExclusiveWrite } from '../db/unit-of-work.js';
import { copyIn, copyOut, dbError, withPgReadSnapshot } from '../db/pg-copy.js';
import { boundSql } from '../db/sql.js';
import { isPostgres } from '../migrations/dialect.js';
import { CopyTextToJson, PG_COPY_TEXT_SESSION, rowsToCopyText } from '../snapshots/pg-copy-text.js';
import {
  snapshotTableSpecs,
  toSnapshotValue,
  type ColumnSpec,
  type SnapshotRow,
  type SnapshotTables,
  type TableSpec,
} from '../snapshots/tables.js';
import { newId } from '../domain/ids.js';
import { idCursor, pageLimit, toPage, type Page, type PageRequest } from '../domain/paging.js';
import { SnapshotArchive } from '../domain/entities/system.js';

export type ArchiveKind = 'export' | 'staged';

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

export interface StagedSnapshot extends SnapshotView {
  data: Buffer;
  sealedKey: string;
}

const view = (a: SnapshotArchive): SnapshotView => ({
  id: a.id,
  kind: a.kind as ArchiveKind,
  createdAt: a.createdAt.toISOString(),
  size: a.size,
  sha256: a.sha256,
  schemaVersion: a.schemaVersion,
  counts: a.counts,
});

/**
 * Rows per INSERT. Few statements matter more than anything else for bulk speed, but a
 * statement's parameters are bounded (PostgreSQL 65,535; SQLite 32,766), so wide tables
 * get fewer rows per statement.
 */
const MAX_BATCH_ROWS = 1000;
const MAX_BATCH_PARAMS = 30_000;
export const batchRows = (spec: TableSpec): number => Math.max(1, Math.min(MAX_BATCH_ROWS, Math.floor(MAX_BATCH_PARAMS / spec.columns.length)));

/** Drivers hand blobs back as Buffer (pg, better-sqlite3); the entity type also allows Uint8Array. */
const asBuffer = (data: Uint8Array | Buffer): Buffer => (Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength));

const keyOrder = (spec: TableSpec) => {
  const pk = spec.primaryKey;
  return (a: Record<string, unknown>, b: Record<string, unknown>): number => {
    for (const col of pk) {
      const x = a[col] as string | number;
      const y = b[col] as string | number;
      if (x < y) return -1;
      if (x > y) return 1;
    }
    return 0;
  };
};

/** The one Kysely call restore makes (the ORM hands out an untyped Kysely). */
interface RowInserter {
  insertInto(table: string): { values(rows: Record<string, unknown>[]): { execute(): Promise<unknown> } };
}

/**
 * Snapshot values (tables.ts) as this database stores them, the way the ORM itself writes
 * them, so that entities read back what restore wrote: date-times as the platform keeps
 * Dates (SQLite: epoch milliseconds; PostgreSQL: timestamptz), JSON as JSON text (a bare
 * array would otherwise be bound as a PostgreSQL array), booleans as SQLite's 0/1.
 */
function databaseRowConverter(em: Em): (spec: TableSpec, row: Record<string, unknown>) => Record<string, unknown> {
  const platform = em.getPlatform();
  const postgres = isPostgres(em.getDriver());
  const convert = (col: ColumnSpec, value: unknown): unknown => {
    if (value === null || value === undefined) return null;
    switch (col.kind) {
      case 'datetime':
        return platform.processDateProperty(new Date(value as string));
      case 'json':
        return JSON.stringify(value);
      case 'boolean':
        return postgres ? value : value ? 1 : 0;
      default:
        return value;
    }
  };
  return (spec, row) => {
    const out: Record<string, unknown> = {};
    for (const col of spec.columns) out[col.name] = convert(col, row[col.name]);
    return out;
  };
}

/** to_char pattern for Date.prototype.toISOString's form, applied to a UTC timestamp. */
const PG_ISO_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"';

/** Rows per piece of COPY text a restore hands to the stream (~0.5 MB on the widest table). */
const COPY_BATCH_ROWS = 2000;

const pgIdent = (name: string): string => `"${name.replace(/"/g, '""')}"`;

/* ------------------------------------------------- rows as JSON, by the database */

/**
 * Where an export's JSON text goes, table by table (src/snapshots/format.ts: SnapshotWriter,
 * which states the rows it was given as the file's counts).
 */
export interface SnapshotJsonSink {
  table(name: string): void;
  /** `count` rows as JSON objects joined by commas; a promise asks the caller to wait (memory). */
  rows(text: string, count: number): Promise<void> | undefined;
  /** The same as UTF-8 bytes that continue the table: after a comma unless they are its first rows. */
  rowBytes(bytes: Buffer, count: number): Promise<void> | undefined;
}

/**
 * Rows per statement of a SQLite export: ~1.5 MB of JSON text on the widest table, small
 * enough that gzip starts on the first piece early, large enough that statements cost
 * nothing next to their rows.
 */
const JSON_CHUNK_ROWS = 5000;

const sqlString = (s: string): string => `'${s.replace(/'/g, "''")}'`;

/**
 * One column as SQLite's json_object writes the snapshot value (tables.ts); the reverse of
 * databaseRowConverter. Texts are escaped by json_object, numbers printed round-trip exact.
 */
function sqliteValueJson(col: ColumnSpec, q: (id: string) => string): string {
  const c = q(col.name);
  switch (col.kind) {
    case 'boolean':
      return `case when ${c} is null then null when ${c} <> 0 then json('true') else json('false') end`;
    case 'datetime':
      // The ORM keeps date-times as epoch milliseconds. Whole non-negative ones (all that
      // meshq writes from 1970 on) take datetime() plus the milliseconds printed, which
      // costs two thirds of strftime's %f; the rest take strftime. Text (never written by
      // meshq) is read as SQLite reads date-time text.
      return (
        `case when typeof(${c}) = 'integer' and ${c} >= 0 then replace(datetime(${c} / 1000, 'unixepoch'), ' ', 'T') || printf('.%03dZ', ${c} % 1000) ` +
        `when typeof(${c}) in ('integer', 'real') then strftime('%Y-%m-%dT%H:%M:%fZ', ${c} / 1000.0, 'unixepoch') else strftime('%Y-%m-%dT%H:%M:%fZ', ${c}) end`
      );
    case 'json':
      // JSON text (or a bare number, stored as one by the column's NUMERIC affinity).
      return `json(${c})`;
    default:
      return c;
  }
}

const sqliteRowJson = (spec: TableSpec, q: (id: string) => string): string =>
  `json_object(${spec.columns.map((c) => `${sqlString(c.name)}, ${sqliteValueJson(c, q)}`).join(', ')})`;

/**
 * Tables whose key orders the same in SQLite as in JS (files list rows in code-unit order
 * of the key, see readTable): a single uuid (lowercase hex) or integer column. Their rows
 * are read in key ranges, in key order, each row's JSON written by the database. Text keys order by
 * UTF-8 bytes in SQLite, which differs from UTF-16 code units past U+FFFF: those (small)
 * tables are sorted here.
 */
const rangeKey = (spec: TableSpec): ColumnSpec | undefined => {
  if (spec.primaryKey.length !== 1) return undefined;
  const col = spec.columns.find((c) => c.name === spec.primaryKey[0]);
  return col && (col.kind === 'uuid' || col.kind === 'integer') ? col : undefined;
};

export type RestoreProgress = (done: number, total: number) => Promise<void>;

export class SnapshotRepository {
  constructor(private readonly em: Em) {}

  /** The business tables, in foreign-key order. */
  tableSpecs(): readonly TableSpec[] {
    return snapshotTableSpecs(this.em.getMetadata());
  }

  /** Names of the migrations the database has applied, in the order they ran. */
  async appliedMigrations(): Promise<string[]> {
    const table = this.em.config.get('migrations').tableName ?? 'mikro_orm_migrations';
    const platform = this.em.getPlatform();
    const rows = await this.em.execute<{ name: string }[]>(
      `select ${platform.quoteIdentifier('name')} from ${platform.quoteIdentifier(table)} order by ${platform.quoteIdentifier('id')}`,
    );
    return rows.map((r) => r.name);
  }

  /**
   * Every business row, as of one instant.
   *
   * PostgreSQL: in a REPEATABLE READ, READ ONLY transaction of its own (on a fork, so on
   * another pooled connection), never in the caller's: a job's transaction is READ
   * COMMITTED, where each SELECT sees a different moment and a node created between two
   * of them would be exported without its config, or a link without its node.
   * SQLite: in the caller's transaction (a job's, or uow.read), which already reads one
   * WAL snapshot; a second transaction cannot be opened on SQLite's single connection.
   */
  async readBusinessTables(): Promise<SnapshotTables> {
    if (isPostgres(this.em.getDriver())) {
      return this.em.fork().transactional((tx) => new SnapshotRepository(tx as Em).readRows(), {
        isolationLevel: 'repeatable read',
        readOnly: true,
      });
    }
    if (!this.em.isInTransaction()) {
      throw new Error('SnapshotRepository.readBusinessTables on SQLite must run inside a transaction (uow.read or a job)');
    }
    return this.readRows();
  }

  private async readRows(): Promise<SnapshotTables> {
    const tables: SnapshotTables = {};
    for (const spec of this.tableSpecs()) tables[spec.table] = await this.readTable(spec);
    return tables;
  }

  private async readTable(spec: TableSpec): Promise<SnapshotRow[]> {
    return this.snapshotRows(spec, await this.em.execute<SnapshotRow[]>(this.selectTable(spec)));
  }

  /**
   * A table's rows in key order, every column in spec order. PostgreSQL writes date-times
   * in the snapshot's form itself (UTC, milliseconds, "Z"), whatever the session's time
   * zone: parsing them into Dates and formatting them again was a fifth of an export.
   * Every other value arrives as the snapshot carries it, or is converted by snapshotRows.
   * For COPY (CopyTextToJson) date-times are left in PostgreSQL's own output form.
   */
  private selectTable(spec: TableSpec, forCopy = false): string {
    const postgres = isPostgres(this.em.getDriver());
    const q = (id: string) => this.em.getPlatform().quoteIdentifier(id);
    const select = spec.columns.map((c) =>
      postgres && !forCopy && c.kind === 'datetime' ? `to_char(${q(c.name)} at time zone 'UTC', '${PG_ISO_FORMAT}') as ${q(c.name)}` : q(c.name),
    );
    return `select ${select.join(', ')} from ${q(spec.table)} order by ${spec.primaryKey.map(q).join(', ')}`;
  }

  /** selectTable's rows as snapshot rows, in the file's order. */
  private snapshotRows(spec: TableSpec, rows: SnapshotRow[]): SnapshotRow[] {
    const postgres = isPostgres(this.em.getDriver());
    const jsonIsText = !this.em.getPlatform().convertsJsonAutomatically();
    const convert = spec.columns.filter((c) => !(postgres && c.kind === 'datetime'));
    // Converted in place: the driver's row objects have exactly the selected columns,
    // in column order, and copying 250,000 of them was pure garbage-collector work.
    for (const row of rows) {
      for (const col of convert) row[col.name] = toSnapshotValue(col, row[col.name], jsonIsText);
    }
    // The database's order is its collation's (PostgreSQL's may be locale-aware); files
    // list rows in one order whatever database wrote them: code-unit order of the key.
    return rows.sort(keyOrder(spec));
  }

  /**
   * Every business row, as of one instant (the same read as readBusinessTables), written
   * as JSON into `sink`, table by table in foreign-key order, rows in the order and form
   * readBusinessTables gives them. Returns the sink. The writer compresses on the thread
   * pool while the next rows are read.
   * SQLite: json_object writes each row's JSON in the database, the rows never become JS
   * objects. PostgreSQL: COPY's text is converted to the JSON bytes (writeJsonPostgres).
   */
  async writeBusinessTablesJson<S extends SnapshotJsonSink>(sink: S): Promise<S> {
    if (isPostgres(this.em.getDriver())) return withPgReadSnapshot(this.em, (client) => this.writeJsonPostgres(client, sink));
    if (!this.em.isInTransaction()) {
      throw new Error('SnapshotRepository.writeBusinessTablesJson on SQLite must run inside a transaction (uow.read or a job)');
    }
    return this.writeJsonSqlite(sink);
  }

  /**
   * PostgreSQL, on the export's own REPEATABLE READ client: each table with a uuid or
   * integer key as `COPY (select …) TO STDOUT`, its bytes converted to the file's JSON as
   * they arrive (src/snapshots/pg-copy-text.ts) and compressed while the next arrive; the
   * server orders the rows, since such keys order the same there as in JS. Tables with
   * other keys are small (settings) and read as rows, sorted here (see rangeKey).
   * Measured on the benchmark's 240,000 rows: reading them as objects through node-postgres,
   * converting, sorting and stringifying took three times as long, all of it on the
   * worker's main thread; building the JSON in SQL costs the server ~2.5x the CPU of COPY.
   */
  private async writeJsonPostgres<S extends SnapshotJsonSink>(client: PoolClient, sink: S): Promise<S> {
    await client.query(PG_COPY_TEXT_SESSION);
    for (const spec of this.tableSpecs()) {
      sink.table(spec.table);
      if (rangeKey(spec)) {
        const json = new CopyTextToJson(spec);
        for await (const chunk of copyOut(client, `copy (${this.selectTable(spec, true)}) to stdout`)) {
          for (const piece of json.push(chunk)) await sink.rowBytes(piece.bytes, piece.rows);
        }
        const last = json.end();
        if (last) await sink.rowBytes(last.bytes, last.rows);
      } else {
        const rows = this.snapshotRows(spec, (await client.query<SnapshotRow>(this.selectTable(spec))).rows);
        if (rows.length > 0) await sink.rows(JSON.stringify(rows).slice(1, -1), rows.length);
      }
    }
    return sink;
  }

  /** SQLite, in the caller's transaction: json_object writes every row's JSON, in key ranges. */
  private async writeJsonSqlite<S extends SnapshotJsonSink>(sink: S): Promise<S> {
    const platform = this.em.getPlatform();
    const q = (id: string) => platform.quoteIdentifier(id);
    const sql = boundSql(this.em);
    for (const spec of this.tableSpecs()) {
      sink.table(spec.table);
      const row = sqliteRowJson(spec, q);
      const key = rangeKey(spec);
      if (key) {
        const k = q(key.name);
        // Rows joined here rather than by group_concat: only `group_concat(… order by k)`
        // is documented to keep the order, and its sort took a sixth of the export.
        const text = (where: string) => `select ${k} as k, ${row} as j from ${q(spec.table)}${where} order by ${k} limit ${JSON_CHUNK_ROWS}`;
        const first = text('');
        const next = text(` where ${k} > ?`);
        let after: string | number | undefined;
        for (;;) {
          const { rows } = await sql.query<{ k: string | number; j: string }>(after === undefined ? first : next, after === undefined ? [] : [after]);
          if (rows.length > 0) await sink.rows(rows.map((r) => r.j).join(','), rows.length);
          if (rows.length < JSON_CHUNK_ROWS) break;
          after = rows.at(-1)!.k;
        }
      } else {
        const keys = spec.primaryKey.map(q).join(', ');
        const res = await sql.query<SnapshotRow>(`select ${keys}, ${row} as ${q('__row_json')} from ${q(spec.table)}`);
        const rows = res.rows.sort(keyOrder(spec));
        for (let at = 0; at < rows.length; at += JSON_CHUNK_ROWS) {
          const slice = rows.slice(at, at + JSON_CHUNK_ROWS);
          await sink.rows(slice.map((r) => r.__row_json as string).join(','), slice.length);
        }
      }
    }
    return sink;
  }

  /** Row count of every business table (diagnostics, tests, benchmarks). */
  async businessRowCounts(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const spec of this.tableSpecs()) out[spec.table] = await this.em.count(spec.entity, {});
    return out;
  }

  /**
   * Replaces every business row with the given (validated, current-schema) rows, in the
   * caller's transaction: all of it commits or none of it does. Deletes children first,
   * inserts parents first, so foreign keys hold after every statement.
   *
   * `tables` may be a function that makes the rows (the restore job's decoding of the
   * file): it is called once the deletes are on their way, so on PostgreSQL the server
   * deletes while this process decodes (a second of JS on the benchmark's rows).
   */
  async replaceBusinessData(tables: SnapshotTables | (() => SnapshotTables), progress?: RestoreProgress): Promise<Record<string, number>> {
    if (!this.em.isInTransaction()) throw new Error('SnapshotRepository.replaceBusinessData must run inside a transaction');
    const specs = this.tableSpecs();
    const q = (id: string) => this.em.getPlatform().quoteIdentifier(id);
    const deletes = [...specs].reverse().map((spec) => `delete from ${q(spec.table)}`);
    const rowsOf = typeof tables === 'function' ? tables : () => tables;
    const total = (t: SnapshotTables) => specs.reduce((n, s) => n + (t[s.table]?.length ?? 0), 0);

    if (isPostgres(this.em.getDriver())) {
      // Exclusive: no operation may interleave with a restore (DESIGN section 4).
      const client = isExclusiveWrite(this.em) ? heldClientOf(this.em) : undefined;
      if (!client) throw new Error('SnapshotRepository.replaceBusinessData on PostgreSQL must run in an exclusive write transaction (uow.write(fn, { exclusive: true }))');
      // One simple query, sent before the rows are made (client.query writes it at once).
      const deleting = client.query(deletes.join('; '));
      let rows: SnapshotTables;
      try {
        rows = rowsOf();
      } finally {
        // Settled before anything else happens on the connection, whatever rowsOf did.
        await deleting.catch((err: unknown) => Promise.reject(dbError(this.em, err)));
      }
      await progress?.(0, total(rows));
      return this.copyPostgres(client, specs, rows, total(rows), progress);
    }

    for (const statement of deletes) await this.em.execute(statement, [], 'run');
    const rows = rowsOf();
    await progress?.(0, total(rows));
    const kysely = this.em.getKysely() as unknown as RowInserter;
    const toDatabaseRow = databaseRowConverter(this.em);
    let done = 0;
    const counts: Record<string, number> = {};
    for (const spec of specs) {
      const tableRows = rows[spec.table] ?? [];
      const size = batchRows(spec);
      for (let at = 0; at < tableRows.length; at += size) {
        const batch = tableRows.slice(at, at + size).map((row) => toDatabaseRow(spec, row));
        // Kysely (bound to this transaction) sends one INSERT ... VALUES with bound
        // parameters. em.insertMany would inline every value into the SQL text and run
        // the ORM's per-row processing: measured 20-50% slower on the same rows.
        await kysely.insertInto(spec.table).values(batch).execute();
        done += batch.length;
        await progress?.(done, total(rows));
      }
      counts[spec.table] = tableRows.length;
    }
    return counts;
  }

  /**
   * PostgreSQL: each table's rows by `COPY … FROM STDIN` (text format) on the transaction's
   * own client, as `psql` loads a `pg_dump`: the server's bulk path (rows inserted in
   * batches per page, one statement per table), with the next rows' text made here while
   * the server takes the previous ones. Measured on the benchmark's 240,000 rows (with the
   * deletes running while the file is decoded): a restore replacing every row took 4.0-4.5 s,
   * against 4.9-7.2 s with `insert … select * from unnest($1::uuid[], …)` per 5,000 rows.
   */
  private async copyPostgres(client: PoolClient, specs: readonly TableSpec[], tables: SnapshotTables, total: number, progress?: RestoreProgress): Promise<Record<string, number>> {
    const counts: Record<string, number> = {};
    let done = 0;
    for (const spec of specs) {
      const rows = tables[spec.table] ?? [];
      counts[spec.table] = rows.length;
      if (rows.length === 0) continue;
      async function* text(): AsyncGenerator<string> {
        for (let at = 0; at < rows.length; at += COPY_BATCH_ROWS) {
          const end = Math.min(rows.length, at + COPY_BATCH_ROWS);
          yield rowsToCopyText(spec, rows, at, end);
          done += end - at;
          await progress?.(done, total);
        }
      }
      const sql = `copy ${pgIdent(spec.table)} (${spec.columns.map((c) => pgIdent(c.name)).join(', ')}) from stdin`;
      let copied: number;
      try {
        copied = await copyIn(client, sql, text());
      } catch (err) {
        throw dbError(this.em, err);
      }
      if (copied !== rows.length) throw new Error(`snapshot restore: COPY took ${copied} rows of ${spec.table}, not ${rows.length}`);
    }
    return counts;
  }

  /* ------------------------------------------------------------ archives */

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
    await boundSql(this.em).query(
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

  /** An export's encrypted bytes. */
  async exportFile(id: string): Promise<{ view: SnapshotView; data: Buffer } | undefined> {
    const row = await this.em.findOne(SnapshotArchive, { id, kind: 'export' }, { populate: ['data'] as never });
    return row ? { view: view(row), data: asBuffer(row.data) } : undefined;
  }

  async getStaged(id: string): Promise<StagedSnapshot | undefined> {
    const row = await this.em.findOne(SnapshotArchive, { id, kind: 'staged' }, { populate: ['data'] as never });
    if (!row?.sealedKey) return undefined;
    return { ...view(row), data: asBuffer(row.data), sealedKey: row.sealedKey };
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
