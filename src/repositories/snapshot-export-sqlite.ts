/**
 * The snapshot export on SQLite, in the caller's transaction (which already reads one WAL
 * snapshot; SQLite's one connection cannot open a second): json_object writes every row's
 * JSON in the database, in key ranges, and the rows never become JS objects.
 */
import type { Em } from '../db/orm.js';
import type { BoundSql } from '../db/sql.js';
import type { ColumnSpec, SnapshotRow, TableSpec } from '../snapshots/tables.js';
import { keyOrder, rangeKey, type SnapshotJsonSink } from './snapshot-rows.js';

/**
 * Rows per statement of a SQLite export: well under a megabyte of JSON text on usual rows, small
 * enough that gzip starts on the first piece early, large enough that statements cost
 * nothing next to their rows; a few such pieces in memory at once stay small even when
 * rows are large (big audit details).
 */
const JSON_CHUNK_ROWS = 2000;

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
      // costs less than strftime's %f; the rest take strftime. Text (never written by
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

export async function writeJsonSqlite<S extends SnapshotJsonSink>(em: Em, sql: BoundSql, specs: readonly TableSpec[], sink: S): Promise<S> {
  const platform = em.getPlatform();
  const q = (id: string) => platform.quoteIdentifier(id);
  for (const spec of specs) {
    sink.table(spec.table);
    const row = sqliteRowJson(spec, q);
    const key = rangeKey(spec);
    if (key) {
      const k = q(key.name);
      // One statement per range hands over the range's rows already joined, as one blob
      // (the text's UTF-8 bytes, which the writer compresses as they are): no JS string
      // per row, no join and no UTF-8 encoding in JS, which together cost more than
      // SQLite's json_object itself. Which rows form a range is the subquery's ORDER BY
      // and LIMIT, whatever the order in which the aggregate then sees them; and SQLite
      // keeps a FROM subquery's ORDER BY when the outer query aggregates (it omits it
      // otherwise), so that group_concat joins the rows in that order, which the
      // export-json test holds the bundled SQLite to. `group_concat(… order by k)`, the
      // only order the documentation promises, sorted every range again, row texts
      // included: a quarter of the export's SQL time. A different order would change
      // only the order of rows within a range, never which rows the file holds.
      // `?` is the separator before the range (a comma after rows). max(k) is the
      // range's last key: where the next range starts.
      const text = (where: string) =>
        `select cast(? || group_concat(j, ',') as blob) as j, max(k) as k, count(*) as n ` +
        `from (select ${k} as k, ${row} as j from ${q(spec.table)}${where} order by ${k} limit ${JSON_CHUNK_ROWS})`;
      const first = text('');
      const next = text(` where ${k} > ?`);
      let after: string | number | undefined;
      for (;;) {
        const separator = after === undefined ? '' : ',';
        const { rows } = await sql.query<{ k: string | number; j: Uint8Array | null; n: number }>(after === undefined ? first : next, after === undefined ? [separator] : [separator, after]);
        const { j, k: last, n } = rows[0]!;
        if (n > 0) await sink.rowBytes(Buffer.isBuffer(j) ? j : Buffer.from(j!.buffer, j!.byteOffset, j!.byteLength), n);
        if (n < JSON_CHUNK_ROWS) break;
        after = last;
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
