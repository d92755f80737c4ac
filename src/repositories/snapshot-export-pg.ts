/**
 * The snapshot export on PostgreSQL: every business row, as of one instant, written as the
 * file's JSON without becoming JS objects.
 */
import type { PoolClient } from 'pg';
import type { Em } from '../db/orm.js';
import { withPgReadSnapshot } from '../db/pg-copy.js';
import { copyOutRaw } from '../db/pg-copy-out.js';
import { CopyTextToJson, PG_COPY_TEXT_SESSION } from '../snapshots/pg-copy-text.js';
import type { SnapshotRow, TableSpec } from '../snapshots/tables.js';
import { rangeKey, selectTable, snapshotRows, type SnapshotJsonSink } from './snapshot-rows.js';

/**
 * On a REPEATABLE READ, READ ONLY client of its own (another pooled connection), never
 * the caller's transaction: a job's transaction is READ COMMITTED, where each SELECT sees
 * a different moment and a node created between two of them would be exported without its
 * config. Each table with a uuid or integer key goes as `COPY (select …) TO STDOUT`, its
 * bytes converted to the file's JSON as they arrive (src/snapshots/pg-copy-text.ts) and
 * compressed while the next arrive; the server orders the rows, since such keys order the
 * same there as in JS. Tables with other keys are small (settings) and read as rows,
 * sorted here (see rangeKey). Reading every row as an object through node-postgres,
 * converting, sorting and stringifying cost several times as much, all of it on the
 * worker's main thread; building the JSON in SQL costs the server more than COPY does.
 */
export function writeJsonPostgres<S extends SnapshotJsonSink>(em: Em, specs: readonly TableSpec[], sink: S): Promise<S> {
  return withPgReadSnapshot(em, (client) => copyTables(em, client, specs, sink));
}

async function copyTables<S extends SnapshotJsonSink>(em: Em, client: PoolClient, specs: readonly TableSpec[], sink: S): Promise<S> {
  await client.query(PG_COPY_TEXT_SESSION);
  // Each table is read in key order. Without statistics (a table a restore just loaded, as
  // no restore analyzes), the planner reads a large one with parallel workers that sort
  // their shares on disk and merge them, instead of walking the primary key in order; one
  // reader per export keeps it to the key's index, as it plans with statistics anyway.
  await client.query('set local max_parallel_workers_per_gather = 0');
  for (const spec of specs) {
    sink.table(spec.table);
    if (rangeKey(spec)) {
      const json = new CopyTextToJson(spec, sink.buffer?.bind(sink));
      for await (const chunk of copyOutRaw(client, `copy (${selectTable(em, spec, true)}) to stdout`)) {
        for (const piece of json.push(chunk)) await sink.rowBytes(piece.bytes, piece.rows);
      }
      const last = json.end();
      if (last) await sink.rowBytes(last.bytes, last.rows);
    } else {
      const rows = snapshotRows(em, spec, (await client.query<SnapshotRow>(selectTable(em, spec))).rows);
      if (rows.length > 0) await sink.rows(JSON.stringify(rows).slice(1, -1), rows.length);
    }
  }
  return sink;
}
