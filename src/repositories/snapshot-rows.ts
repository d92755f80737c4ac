/**
 * What the snapshot export's two paths (and the test of them) share: where the JSON goes,
 * the order rows are listed in, which tables are read in key ranges, and a table's plain
 * SELECT with its rows in the file's form.
 */
import type { Em } from '../db/orm.js';
import { isPostgres } from '../migrations/dialect.js';
import { toSnapshotValue, type ColumnSpec, type SnapshotRow, type TableSpec } from '../snapshots/tables.js';

/**
 * Where an export's JSON text goes, table by table (src/snapshots/writer.ts: SnapshotWriter,
 * which states the rows it was given as the file's counts).
 */
export interface SnapshotJsonSink {
  table(name: string): void;
  /** `count` rows as JSON objects joined by commas; a promise asks the caller to wait (memory). */
  rows(text: string, count: number): Promise<void> | undefined;
  /** The same as UTF-8 bytes that continue the table: after a comma unless they are its first rows. */
  rowBytes(bytes: Buffer, count: number): Promise<void> | undefined;
  /**
   * A buffer of at least `bytes` to write rowBytes' bytes in, which the sink takes back
   * once it is done with what was handed over from it (SnapshotWriter.buffer).
   */
  buffer?(bytes: number): Buffer;
}

/** Code-unit order of a table's primary key: the order files list rows in. */
export const keyOrder = (spec: TableSpec) => {
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

/**
 * Tables whose key orders the same in the database as in JS (files list rows in code-unit
 * order of the key): a single uuid (lowercase hex) or integer column. Their rows are read
 * in key order as the database sorts them. Text keys order by UTF-8 bytes in SQLite (and
 * by collation in PostgreSQL), which differs from UTF-16 code units: those (small) tables
 * are sorted here.
 */
export const rangeKey = (spec: TableSpec): ColumnSpec | undefined => {
  if (spec.primaryKey.length !== 1) return undefined;
  const col = spec.columns.find((c) => c.name === spec.primaryKey[0]);
  return col && (col.kind === 'uuid' || col.kind === 'integer') ? col : undefined;
};

/** to_char pattern for Date.prototype.toISOString's form, applied to a UTC timestamp. */
const PG_ISO_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"';

/**
 * A table's rows in key order, every column in spec order. PostgreSQL writes date-times
 * in the snapshot's form itself (UTC, milliseconds, "Z"), whatever the session's time
 * zone: parsing them into Dates and formatting them again cost a large part of an export.
 * Every other value arrives as the snapshot carries it, or is converted by snapshotRows.
 * For COPY (src/snapshots/pg-copy-text.ts) date-times are left in PostgreSQL's own form.
 */
export function selectTable(em: Em, spec: TableSpec, forCopy = false): string {
  const postgres = isPostgres(em.getDriver());
  const q = (id: string) => em.getPlatform().quoteIdentifier(id);
  const select = spec.columns.map((c) =>
    postgres && !forCopy && c.kind === 'datetime' ? `to_char(${q(c.name)} at time zone 'UTC', '${PG_ISO_FORMAT}') as ${q(c.name)}` : q(c.name),
  );
  return `select ${select.join(', ')} from ${q(spec.table)} order by ${spec.primaryKey.map(q).join(', ')}`;
}

/** selectTable's rows as snapshot rows, in the file's order. */
export function snapshotRows(em: Em, spec: TableSpec, rows: SnapshotRow[]): SnapshotRow[] {
  const postgres = isPostgres(em.getDriver());
  const jsonIsText = !em.getPlatform().convertsJsonAutomatically();
  const convert = spec.columns.filter((c) => !(postgres && c.kind === 'datetime'));
  // Converted in place: the driver's row objects have exactly the selected columns,
  // in column order, and copying every row was pure garbage-collector work.
  for (const row of rows) {
    for (const col of convert) row[col.name] = toSnapshotValue(col, row[col.name], jsonIsText);
  }
  // The database's order is its collation's (PostgreSQL's may be locale-aware); files
  // list rows in one order whatever database wrote them: code-unit order of the key.
  return rows.sort(keyOrder(spec));
}
