/**
 * The snapshot restore's writes: every business row replaced, in the restore's own
 * exclusive write transaction. Rows never pass through the identity map: multi-row INSERTs
 * with bound parameters on SQLite, COPY FROM STDIN on PostgreSQL.
 */
import type { PoolClient } from 'pg';
import type { Em } from '../db/orm.js';
import { copyIn, dbError } from '../db/pg-copy.js';
import type { TransactionHandle } from '../db/unit-of-work.js';
import { isPostgres } from '../migrations/dialect.js';
import { rowsToCopyText } from '../snapshots/pg-copy-text.js';
import type { ColumnSpec, SnapshotTables, TableSpec } from '../snapshots/tables.js';

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

const pgIdent = (name: string): string => `"${name.replace(/"/g, '""')}"`;

/** The one Kysely call restore makes (the ORM hands out an untyped Kysely). */
interface RowInserter {
  insertInto(table: string): { values(rows: Record<string, unknown>[]): { execute(): Promise<unknown> } };
}

/**
 * Replaces every business row with the given (validated, current-schema) rows, in the
 * caller's transaction: all of it commits or none of it does. Deletes children first,
 * inserts parents first, so foreign keys hold after every statement.
 *
 * `tables` may be a function that makes the rows (the restore job's decoding of the
 * file): it is called once the deletes are on their way, so on PostgreSQL the server
 * deletes while this process decodes.
 */
export async function replaceBusinessData(
  em: Em,
  tx: TransactionHandle | undefined,
  specs: readonly TableSpec[],
  tables: SnapshotTables | (() => SnapshotTables),
  progress?: RestoreProgress,
): Promise<Record<string, number>> {
  if (!em.isInTransaction()) throw new Error('SnapshotRepository.replaceBusinessData must run inside a transaction');
  const q = (id: string) => em.getPlatform().quoteIdentifier(id);
  const deletes = [...specs].reverse().map((spec) => `delete from ${q(spec.table)}`);
  const rowsOf = typeof tables === 'function' ? tables : () => tables;
  const total = (t: SnapshotTables) => specs.reduce((n, s) => n + (t[s.table]?.length ?? 0), 0);

  if (isPostgres(em.getDriver())) {
    // Exclusive: no operation may interleave with a restore (docs/architecture.md).
    const client = tx?.exclusive ? tx.pgClient : undefined;
    if (!client) throw new Error('SnapshotRepository.replaceBusinessData on PostgreSQL must run in an exclusive write transaction (uow.write(fn, { exclusive: true }))');
    // One simple query, sent before the rows are made (client.query writes it at once).
    const deleting = client.query(deletes.join('; '));
    let rows: SnapshotTables;
    try {
      rows = rowsOf();
    } finally {
      // Settled before anything else happens on the connection, whatever rowsOf did.
      await deleting.catch((err: unknown) => Promise.reject(dbError(em, err)));
    }
    await progress?.(0, total(rows));
    return copyPostgres(em, client, specs, rows, total(rows), progress);
  }

  for (const statement of deletes) await em.execute(statement, [], 'run');
  const rows = rowsOf();
  await progress?.(0, total(rows));
  const kysely = em.getKysely() as unknown as RowInserter;
  const toDatabaseRow = databaseRowConverter(em);
  let done = 0;
  const counts: Record<string, number> = {};
  for (const spec of specs) {
    const tableRows = rows[spec.table] ?? [];
    const size = batchRows(spec);
    for (let at = 0; at < tableRows.length; at += size) {
      const batch = tableRows.slice(at, at + size).map((row) => toDatabaseRow(spec, row));
      // Kysely (bound to this transaction) sends one INSERT ... VALUES with bound
      // parameters. em.insertMany would inline every value into the SQL text and run
      // the ORM's per-row processing, which is slower on the same rows.
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
 * the server takes the previous ones. Faster than multi-row INSERTs or
 * `insert … select * from unnest($1::uuid[], …)` on the benchmark's rows.
 */
async function copyPostgres(
  em: Em,
  client: PoolClient,
  specs: readonly TableSpec[],
  tables: SnapshotTables,
  total: number,
  progress?: RestoreProgress,
): Promise<Record<string, number>> {
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
      throw dbError(em, err);
    }
    if (copied !== rows.length) throw new Error(`snapshot restore: COPY took ${copied} rows of ${spec.table}, not ${rows.length}`);
  }
  return counts;
}

/**
 * Snapshot values (src/snapshots/tables.ts) as this database stores them, the way the ORM
 * itself writes them, so that entities read back what restore wrote: date-times as the
 * platform keeps Dates (SQLite: epoch milliseconds; PostgreSQL: timestamptz), JSON as JSON
 * text (a bare array would otherwise be bound as a PostgreSQL array), booleans as SQLite's 0/1.
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
