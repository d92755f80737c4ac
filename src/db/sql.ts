/**
 * Bound-parameter SQL for the hottest statements, inside the entity manager's transaction.
 *
 * MikroORM 7 formats every value into the SQL text it sends, so each query is parsed and
 * planned anew by PostgreSQL, and SQLite's statement cache (src/db/orm.ts) never hits
 * one with values in it. Profiles of `node.update` showed that formatting and building
 * those queries cost more CPU than the database's own work. Statements written here keep
 * a constant text and pass their values as parameters (PostgreSQL's extended protocol;
 * cached better-sqlite3 statements), on the same connection and transaction as the ORM.
 *
 * Use it where a profile says so; everything else stays with the ORM. Identifiers are
 * written unquoted and lower case, so one text serves both dialects; placeholders are `?`.
 */
import { CompiledQuery } from 'kysely';
import type { QueryResult, QueryResultRow } from 'pg';
import type { Dialect } from '../config.js';
import { isPostgres } from '../migrations/dialect.js';
import type { Em } from './orm.js';

export type SqlValue = string | number | boolean | Date | null | object;

/** A name as a quoted SQL identifier (both dialects): for names read from the schema. */
export const quoteIdent = (name: string): string => `"${name.replace(/"/g, '""')}"`;

interface Executor {
  executeQuery<R>(query: CompiledQuery): Promise<{ rows: R[]; numAffectedRows?: bigint }>;
}

/** `?` -> `$1, $2, …` (PostgreSQL); memoized, since every text here is a constant. */
const pgTexts = new Map<string, string>();
function pgText(text: string): string {
  let out = pgTexts.get(text);
  if (out === undefined) {
    out = textParts(text).reduce((sql, part, i) => `${sql}$${i}${part}`);
    pgTexts.set(text, out);
  }
  return out;
}

/**
 * A text cut at its `?` placeholders; memoized like pgText (src/db/closing-write.ts writes
 * values in between). Texts are looked up by value, and V8 keeps a string's hash on the
 * string: callers that make a text at run time make it once and pass the same string.
 */
const textPartsMemo = new Map<string, string[]>();
export function textParts(text: string): string[] {
  let parts = textPartsMemo.get(text);
  if (parts === undefined) {
    parts = text.split('?');
    textPartsMemo.set(text, parts);
  }
  return parts;
}

/**
 * Values as the ORM stores them: SQLite keeps datetimes as epoch milliseconds, booleans
 * as 0/1 and JSON as text. PostgreSQL takes booleans natively, datetimes as ISO 8601 text
 * (cheaper than node-postgres's own local-time formatting) and JSON as text
 * (node-postgres would turn a JS array into a PostgreSQL array, not JSON). Bytes
 * (Buffers, for blob / bytea columns) go as they are, binary, on both.
 */
export function toParam(dialect: Dialect, v: SqlValue): unknown {
  if (v instanceof Date) return dialect === 'sqlite' ? v.getTime() : v.toISOString();
  if (typeof v === 'boolean') return dialect === 'sqlite' ? (v ? 1 : 0) : v;
  if (v instanceof Uint8Array) return v; // bytea / blob: both drivers send bytes as they are
  if (v !== null && typeof v === 'object') return JSON.stringify(v);
  return v;
}

/** A statement and its values, to be run later (a write transaction's closing statement). */
export interface SqlStatement {
  text: string;
  params: readonly SqlValue[];
}

/** A PostgreSQL write transaction's client (TransactionClient, src/db/pg-client.ts). */
interface StatementClient {
  query<R extends QueryResultRow>(text: string, pgText: string, values: unknown[]): Promise<QueryResult<R>>;
}

/** The commands whose row count is rows changed (as Kysely's numAffectedRows). */
const CHANGES = new Set(['INSERT', 'UPDATE', 'DELETE', 'MERGE']);

interface SqlResult<R> {
  rows: R[];
  /** Rows changed by an INSERT, UPDATE or DELETE. */
  affected: number;
}

export class BoundSql {
  /**
   * `client`: the pg client a PostgreSQL write transaction runs on (src/db/unit-of-work.ts
   * holds one for each); statements then go to it directly, without Kysely's per-query
   * layers. Without one they run on the entity manager's transaction context, or on the
   * pool outside a transaction.
   */
  constructor(
    private readonly em: Em,
    readonly dialect: Dialect,
    private readonly client?: StatementClient,
  ) {}

  /**
   * Runs one statement in the entity manager's transaction (or on the pool outside one).
   * Driver errors become MikroORM's exceptions (UniqueConstraintViolationException, …),
   * so they are classified like the ORM's own (src/jobs/errors.ts).
   */
  async query<R = Record<string, unknown>>(text: string, params: readonly SqlValue[] = []): Promise<SqlResult<R>> {
    const values = params.map((p) => toParam(this.dialect, p));
    try {
      if (this.client) {
        const res = await this.client.query<R & QueryResultRow>(text, pgText(text), values);
        return { rows: res.rows, affected: CHANGES.has(res.command) ? (res.rowCount ?? 0) : 0 };
      }
      const executor = (this.em.getTransactionContext() ?? this.em.getConnection().getClient()) as Executor;
      const res = await executor.executeQuery<R>(CompiledQuery.raw(this.dialect === 'postgresql' ? pgText(text) : text, values));
      return { rows: res.rows, affected: Number(res.numAffectedRows ?? 0) };
    } catch (err) {
      throw this.em.getDriver().convertException(err as Error);
    }
  }
}

const dialectOf = (em: Em): Dialect => (isPostgres(em.getDriver()) ? 'postgresql' : 'sqlite');

export const boundSql = (em: Em): BoundSql => new BoundSql(em, dialectOf(em));
