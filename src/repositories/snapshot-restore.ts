/**
 * The snapshot restore's writes: every business row replaced, in the restore's own
 * exclusive write transaction. Rows never pass through the identity map: multi-row INSERTs
 * with bound parameters on SQLite, COPY FROM STDIN on PostgreSQL.
 */
import type { PoolClient } from 'pg';
import type { Em } from '../db/orm.js';
import { copyInStream, dbError } from '../db/pg-copy.js';
import { boundSql, quoteIdent, type SqlValue } from '../db/sql.js';
import type { TransactionHandle } from '../db/unit-of-work.js';
import { isPostgres } from '../migrations/dialect.js';
import { JsonRowsToCopy, rowsToCopyText } from '../snapshots/pg-copy-text.js';
import type { ColumnSpec, SnapshotRow, SnapshotTables, TableSpec } from '../snapshots/tables.js';

export type RestoreProgress = (done: number, total: number) => Promise<void>;

/**
 * Rows per INSERT (SQLite). Few statements matter more than anything else for bulk speed,
 * but a statement's parameters are bounded (SQLite 32,766), so wide tables get fewer rows
 * per statement.
 */
const MAX_BATCH_ROWS = 1000;
const MAX_BATCH_PARAMS = 30_000;
const batchRows = (spec: TableSpec): number => Math.max(1, Math.min(MAX_BATCH_ROWS, Math.floor(MAX_BATCH_PARAMS / spec.columns.length)));

/** Rows per piece of COPY text a restore hands to the stream (about half a megabyte on the widest table). */
const COPY_BATCH_ROWS = 2000;

/** Where a restore's rows are written, batch by batch, tables parents first. */
export interface RestoreLoader {
  /** The rows to come (for progress); called once, before the first batch. */
  total(rows: number): Promise<void>;
  rows(spec: TableSpec, rows: SnapshotRow[]): Promise<void>;
  /**
   * Where the loader can take rows as their JSON bytes (PostgreSQL: straight to COPY text,
   * src/snapshots/pg-copy-text.ts JsonRowsToCopy), the same as rows() would make of them
   * parsed; see RowSink.rowsJson for when a reader may hand rows over so.
   */
  rowsJson?(spec: TableSpec, rows: Buffer[]): Promise<void>;
}

/**
 * The rows of a restore: whole tables, or a function that streams them into the loader
 * (the restore job's decoding of the staged file, src/snapshots/reader.ts) and resolves
 * once every row was handed over and the file authenticated.
 */
export type RestoreRows = SnapshotTables | ((load: RestoreLoader) => Promise<void>);

const fromTables =
  (specs: readonly TableSpec[], tables: SnapshotTables) =>
  async (load: RestoreLoader): Promise<void> => {
    await load.total(specs.reduce((n, s) => n + (tables[s.table]?.length ?? 0), 0));
    for (const spec of specs) {
      const rows = tables[spec.table] ?? [];
      for (let at = 0; at < rows.length; at += COPY_BATCH_ROWS) await load.rows(spec, rows.slice(at, at + COPY_BATCH_ROWS));
    }
  };

/**
 * Replaces every business row with the given (current-schema) rows, in the caller's
 * transaction: all of it commits or none of it does, since the caller commits only after
 * this resolved (and a streamed source resolves only once its file authenticated). Deletes
 * children first, inserts parents first, so foreign keys hold after every statement.
 * Rows are written as they come, so a streamed restore holds one batch at a time. Counts
 * of the rows written per table are returned.
 */
export async function replaceBusinessData(
  em: Em,
  tx: TransactionHandle | undefined,
  specs: readonly TableSpec[],
  source: RestoreRows,
  progress?: RestoreProgress,
): Promise<Record<string, number>> {
  if (!em.isInTransaction()) throw new Error('SnapshotRepository.replaceBusinessData must run inside a transaction');
  // Every row rewritten: on SQLite the commit would otherwise checkpoint the whole WAL
  // inside the job (src/db/sqlite-checkpoint.ts).
  tx?.checkpointAfterCommit();
  const q = (id: string) => em.getPlatform().quoteIdentifier(id);
  const produce = typeof source === 'function' ? source : fromTables(specs, source);
  const counts: Record<string, number> = Object.fromEntries(specs.map((s) => [s.table, 0]));
  let total = 0;
  let done = 0;
  const counted = async (spec: TableSpec, n: number) => {
    counts[spec.table]! += n;
    done += n;
    await progress?.(done, total);
  };

  if (isPostgres(em.getDriver())) {
    // Exclusive: no operation may interleave with a restore (docs/architecture.md).
    const client = tx?.exclusive ? tx.pgClient : undefined;
    if (!client) throw new Error('SnapshotRepository.replaceBusinessData on PostgreSQL must run in an exclusive write transaction (uow.write(fn, { exclusive: true }))');
    // TRUNCATE, not DELETE: a delete of every row visits each one and runs the foreign
    // keys' checks per row, which cost as much as loading the rows again. TRUNCATE takes
    // ACCESS EXCLUSIVE on the business tables until commit, so the API's reads of them
    // wait for the restore instead of reading the rows it replaces, and it is not MVCC-safe
    // for a snapshot older than the commit; the data lock keeps the one such reader, the
    // export, apart from a restore (docs/architecture.md, "Restore exclusion"). Sent before
    // the first rows are decoded.
    const deleting = client.query(`truncate table ${specs.map((s) => quoteIdent(s.table)).join(', ')}`).then(
      () => undefined,
      (err: unknown) => err,
    );
    const copy = new PgTableCopy(em, client);
    try {
      await produce({
        total: async (n) => {
          total = n;
          const failed = await deleting;
          if (failed) throw dbError(em, failed);
          await progress?.(0, total);
        },
        rows: async (spec, rows) => {
          await copy.rows(spec, rows);
          await counted(spec, rows.length);
        },
        rowsJson: async (spec, rows) => {
          await copy.json(spec, rows);
          await counted(spec, rows.length);
        },
      });
      await copy.end();
    } catch (err) {
      await copy.abort(err);
      throw err;
    } finally {
      // Settled before anything else happens on the connection, whatever happened.
      await deleting;
    }
    return counts;
  }

  // In the exclusive transaction foreign keys are checked at commit (src/db/sqlite-foreign-keys.ts),
  // so each delete drops the table's pages whole instead of deleting row by row.
  for (const spec of [...specs].reverse()) await em.execute(`delete from ${q(spec.table)}`, [], 'run');
  const sql = tx?.sql ?? boundSql(em);
  const convert = valueConverter(em);
  // One text per table and batch size, made once: the bound statement is prepared once by
  // better-sqlite3's statement cache and run for every full batch with new values.
  const texts = new Map<string, string>();
  const insertText = (spec: TableSpec, n: number): string => {
    const key = `${spec.table}/${n}`;
    let text = texts.get(key);
    if (text === undefined) {
      const tuple = `(${spec.columns.map(() => '?').join(', ')})`;
      text = `insert into ${q(spec.table)} (${spec.columns.map((c) => q(c.name)).join(', ')}) values ${new Array<string>(n).fill(tuple).join(', ')}`;
      texts.set(key, text);
    }
    return text;
  };
  await produce({
    total: async (n) => {
      total = n;
      await progress?.(0, total);
    },
    rows: async (spec, rows) => {
      const size = batchRows(spec);
      const columns = spec.columns;
      for (let at = 0; at < rows.length; at += size) {
        const end = Math.min(rows.length, at + size);
        const params: SqlValue[] = [];
        for (let i = at; i < end; i++) {
          const row = rows[i]!;
          for (const col of columns) params.push(convert(col, row[col.name]) as SqlValue);
        }
        await sql.query(insertText(spec, end - at), params);
      }
      await counted(spec, rows.length);
    },
  });
  return counts;
}

/**
 * PostgreSQL: each table's rows by `COPY … FROM STDIN` (text format) on the transaction's
 * own client, as `psql` loads a `pg_dump`: the server's bulk path (rows inserted in
 * batches per page, one statement per table). A table's COPY opens with its first batch
 * and ends when the next table's begins; each batch is converted to COPY text and written
 * with the stream's backpressure, so the server takes one batch while the next is decoded.
 */
class PgTableCopy {
  private current: { spec: TableSpec; sink: ReturnType<typeof copyInStream>; rows: number; json?: JsonRowsToCopy } | undefined;

  constructor(
    private readonly em: Em,
    private readonly client: PoolClient,
  ) {}

  async rows(spec: TableSpec, rows: readonly SnapshotRow[]): Promise<void> {
    const current = await this.open(spec);
    await this.write(current, rowsToCopyText(spec, rows, 0, rows.length), rows.length);
  }

  /** Rows as their JSON bytes (RestoreLoader.rowsJson), converted to COPY text without objects. */
  async json(spec: TableSpec, rows: readonly Buffer[]): Promise<void> {
    const current = await this.open(spec);
    current.json ??= new JsonRowsToCopy(spec);
    await this.write(current, current.json.convert(rows), rows.length);
  }

  private async open(spec: TableSpec): Promise<NonNullable<PgTableCopy['current']>> {
    if (this.current?.spec !== spec) {
      await this.end();
      const sql = `copy ${quoteIdent(spec.table)} (${spec.columns.map((c) => quoteIdent(c.name)).join(', ')}) from stdin`;
      this.current = { spec, sink: copyInStream(this.client, sql), rows: 0 };
    }
    return this.current;
  }

  private async write(current: NonNullable<PgTableCopy['current']>, text: string | Buffer, rows: number): Promise<void> {
    current.rows += rows;
    try {
      await current.sink.write(text);
    } catch (err) {
      throw dbError(this.em, err);
    }
  }

  /** Ends the open COPY and checks the rows the server took. */
  async end(): Promise<void> {
    const current = this.current;
    if (!current) return;
    this.current = undefined;
    let copied: number;
    try {
      copied = await current.sink.end();
    } catch (err) {
      throw dbError(this.em, err);
    }
    if (copied !== current.rows) throw new Error(`snapshot restore: COPY took ${copied} rows of ${current.spec.table}, not ${current.rows}`);
  }

  /** Aborts an open COPY (the transaction is failing anyway), waiting until the connection is usable. */
  async abort(err: unknown): Promise<void> {
    const current = this.current;
    this.current = undefined;
    await current?.sink.abort(err);
  }
}

/**
 * Snapshot values (src/snapshots/tables.ts) as this database stores them, the way the ORM
 * itself writes them, so that entities read back what restore wrote: date-times as the
 * platform keeps Dates (SQLite: epoch milliseconds; PostgreSQL: timestamptz), JSON as JSON
 * text (a bare array would otherwise be bound as a PostgreSQL array), booleans as SQLite's 0/1.
 */
function valueConverter(em: Em): (col: ColumnSpec, value: unknown) => unknown {
  const platform = em.getPlatform();
  const postgres = isPostgres(em.getDriver());
  return (col, value) => {
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
}
