/**
 * SQLite: a write transaction whose foreign keys are checked once, before its commit,
 * instead of by every statement (the exclusive transaction of a snapshot restore,
 * src/db/unit-of-work.ts).
 *
 * With foreign keys on, `delete from t` on a table that has or is the target of a foreign
 * key cannot use SQLite's truncate optimization (dropping the table's pages whole): it
 * deletes row by row, each row out of the table and every index, which for a restore's
 * delete of every business row cost more than inserting them again. The pragma cannot
 * change inside a transaction, so the transaction runs with foreign keys off and this
 * check, which finds every row whose reference has no parent (what `PRAGMA
 * foreign_key_check` reports), runs before COMMIT; a violation fails the transaction,
 * which then rolls back, as a violating statement would have. The check reads each child
 * table in rowid ranges, yielding to the event loop between them, since one pass over a
 * large table is too long to hold the worker's loop. ON DELETE actions do not run while
 * foreign keys are off: such a transaction deletes children itself (the restore deletes
 * every business table), and any child row left without its parent fails the check.
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { quoteIdent } from './sql.js';

/** Child rows checked per statement: a few milliseconds of probes. */
const CHECK_ROWS = 20_000;

/** Runs one statement on the transaction's connection and returns its rows. */
export type SqliteRun = (sql: string, params?: readonly unknown[]) => Promise<Record<string, unknown>[]>;

interface ForeignKey {
  child: string;
  parent: string;
  from: string[];
  to: string[];
}

async function foreignKeys(run: SqliteRun): Promise<ForeignKey[]> {
  const rows = await run(
    `select m.name as child, f.id as id, f."table" as parent, f."from" as "from", f."to" as "to" ` +
      `from sqlite_schema m join pragma_foreign_key_list(m.name) f where m.type = 'table' order by m.name, f.id, f.seq`,
  );
  const keys = new Map<string, ForeignKey>();
  for (const r of rows) {
    const id = `${r.child as string}/${r.id as number}`;
    let key = keys.get(id);
    if (!key) keys.set(id, (key = { child: r.child as string, parent: r.parent as string, from: [], to: [] }));
    key.from.push(r.from as string);
    key.to.push(r.to as string);
  }
  for (const key of keys.values()) {
    // A reference without column names is to the parent's primary key.
    if (key.to.some((c) => c === null)) {
      const pk = await run(`select name from pragma_table_info(?) where pk > 0 order by pk`, [key.parent]);
      key.to = pk.map((r) => r.name as string);
    }
  }
  return [...keys.values()];
}

/** Throws if a row of the database references a missing parent row. */
export async function checkSqliteForeignKeys(run: SqliteRun): Promise<void> {
  const byChild = new Map<string, ForeignKey[]>();
  for (const key of await foreignKeys(run)) byChild.set(key.child, [...(byChild.get(key.child) ?? []), key]);
  for (const [child, keys] of byChild) {
    // A child row violates a key when all its columns are set and no parent row matches
    // (a NULL in the key means no reference, as for the constraint itself).
    const violates = keys
      .map((k) => {
        const set = k.from.map((c) => `c.${quoteIdent(c)} is not null`).join(' and ');
        const match = k.from.map((c, i) => `p.${quoteIdent(k.to[i]!)} = c.${quoteIdent(c)}`).join(' and ');
        return `(${set} and not exists (select 1 from ${quoteIdent(k.parent)} p where ${match}))`;
      })
      .join(' or ');
    const range = `select max(r) as last, count(*) as n, sum(bad) as bad from (select c.rowid as r, ${violates} as bad from ${quoteIdent(child)} c where c.rowid > ? order by c.rowid limit ${CHECK_ROWS})`;
    let after = Number.MIN_SAFE_INTEGER;
    for (;;) {
      const [row] = await run(range, [after]);
      const n = Number(row?.n ?? 0);
      if (Number(row?.bad ?? 0) > 0) {
        // The driver's code for the same failure, so the ORM reports it as it would a statement's.
        throw Object.assign(new Error(`FOREIGN KEY constraint failed: a row of ${child} references a missing ${keys.map((k) => k.parent).join(' or ')} row`), {
          code: 'SQLITE_CONSTRAINT_FOREIGNKEY',
        });
      }
      if (n < CHECK_ROWS) break;
      after = Number(row!.last);
      await yieldToLoop();
    }
  }
}
