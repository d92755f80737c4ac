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
import type { QueryResultRow } from 'pg';
import type { Dialect } from '../config.js';
import { isPostgres } from '../migrations/dialect.js';
import type { Em } from './orm.js';
import { heldClientOf } from './pg-client.js';

export type SqlValue = string | number | boolean | Date | null | object;

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

/** A text cut at its `?` placeholders; memoized like pgText. */
const textPartsMemo = new Map<string, string[]>();
function textParts(text: string): string[] {
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
function toParam(dialect: Dialect, v: SqlValue): unknown {
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

/**
 * A statement with its values written into the text as PostgreSQL literals, for a
 * multi-statement simple query (which cannot carry bound parameters). Only values a
 * closing write uses are accepted.
 */
export function inlinePostgres({ text, params }: SqlStatement): string {
  const parts = textParts(text);
  const placeholders = parts.length - 1;
  if (placeholders > params.length) throw new Error(`inlinePostgres: more placeholders than the ${params.length} values in: ${text}`);
  if (placeholders < params.length) throw new Error(`inlinePostgres: ${params.length} values for ${placeholders} placeholders in: ${text}`);
  let out = parts[0]!;
  for (let i = 0; i < placeholders; i++) out += pgLiteral(toParam('postgresql', params[i]!)) + parts[i + 1]!;
  return out;
}


function pgLiteral(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'string') return quoteLiteral(v);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  throw new TypeError(`inlinePostgres: cannot write ${typeof v === 'number' ? v : typeof v} as a literal`);
}

/**
 * node-postgres's escapeLiteral, output for output (a test compares them): quotes doubled,
 * and with any backslash, backslashes doubled in an E'' string, which reads the same
 * whatever standard_conforming_strings says. Its character-by-character loop profiled at
 * 15 µs of every job (the JSON of the audit and ledger rows); two native replaces do not.
 */
export function quoteLiteral(s: string): string {
  const body = s.replaceAll("'", "''");
  return s.includes('\\') ? ` E'${body.replaceAll('\\', '\\\\')}'` : `'${body}'`;
}

/** The commands whose row count is rows changed (as Kysely's numAffectedRows). */
const CHANGES = new Set(['INSERT', 'UPDATE', 'DELETE', 'MERGE']);

export interface SqlResult<R> {
  rows: R[];
  /** Rows changed by an INSERT, UPDATE or DELETE. */
  affected: number;
}

export class BoundSql {
  constructor(
    private readonly em: Em,
    readonly dialect: Dialect,
  ) {}

  /**
   * Runs one statement in the entity manager's transaction (or on the pool outside one).
   * Driver errors become MikroORM's exceptions (UniqueConstraintViolationException, …),
   * so they are classified like the ORM's own (src/jobs/errors.ts).
   */
  async query<R = Record<string, unknown>>(text: string, params: readonly SqlValue[] = []): Promise<SqlResult<R>> {
    const values = params.map((p) => toParam(this.dialect, p));
    try {
      if (this.dialect === 'postgresql') {
        // In a write transaction, straight to the pg client the unit of work holds.
        const client = heldClientOf(this.em);
        if (client) {
          const res = await client.query<R & QueryResultRow>(pgText(text), values);
          return { rows: res.rows, affected: CHANGES.has(res.command) ? (res.rowCount ?? 0) : 0 };
        }
      }
      const executor = (this.em.getTransactionContext() ?? this.em.getConnection().getClient()) as Executor;
      const res = await executor.executeQuery<R>(CompiledQuery.raw(this.dialect === 'postgresql' ? pgText(text) : text, values));
      return { rows: res.rows, affected: Number(res.numAffectedRows ?? 0) };
    } catch (err) {
      throw this.em.getDriver().convertException(err as Error);
    }
  }
}

export const dialectOf = (em: Em): Dialect => (isPostgres(em.getDriver()) ? 'postgresql' : 'sqlite');

export const boundSql = (em: Em): BoundSql => new BoundSql(em, dialectOf(em));
