/**
 * SQLite: an index built once after a bulk insert instead of row by row during it.
 *
 * A bulk insert whose rows enter an index at scattered places (mesh.generate's rows enter
 * peer_link's to_node_id index at one of n places each) pays a b-tree descent and, as the
 * leaves fill, page splits in the middle of the index for every row; building the index
 * afterwards sorts the keys once and writes each page once. The caller decides when that
 * pays (the build reads the whole table, so only when the rows added outnumber the rows
 * held); docs/architecture.md ("mesh.generate is one statement") says why.
 *
 * The index is dropped and created again inside the caller's write transaction. SQLite's
 * DDL is transactional: a failure anywhere before commit rolls the drop back with the rows,
 * and other connections keep reading through their own snapshot, old schema and index
 * included, until the commit. The index is created again from the SQL SQLite stored when
 * the migration created it, so the migrations stay the one definition of the index.
 */
import { quoteIdent, type BoundSql } from './sql.js';

/**
 * Runs `work` without the index `name`, then creates it again as it was defined, all in the
 * transaction `sql` runs in. An index SQLite made itself (a unique constraint's, with no
 * stored SQL) or a missing one is left alone and `work` runs with the table as it is.
 */
export async function withIndexBuiltAfter<T>(sql: BoundSql, name: string, work: () => Promise<T>): Promise<T> {
  if (sql.dialect !== 'sqlite') throw new Error('withIndexBuiltAfter is for SQLite only');
  const { rows } = await sql.query<{ sql: string | null }>("select sql from sqlite_master where type = 'index' and name = ?", [name]);
  const definition = rows[0]?.sql;
  if (!definition) return work();
  await sql.query(`drop index ${quoteIdent(name)}`);
  const result = await work();
  // One statement, run to completion on the calling thread: a sort of the table's keys.
  await sql.query(definition);
  return result;
}
