/**
 * Values written into PostgreSQL statement text as literals, for the simple queries that
 * carry several statements in one round trip: a job's closing write with its COMMIT
 * (src/db/closing-write.ts) and a write transaction's first statement with its BEGIN
 * (src/db/pg-client.ts). A simple query cannot carry bound parameters. Every connection
 * these run on is UTF8 (src/db/encoding.ts). Private to src/db/.
 */
import { textParts, toParam, type SqlStatement } from './sql.js';

/**
 * `text` with `values` (parameters as toParam made them) written in as literals, or
 * undefined when one cannot be (bytes, a non-finite number): the caller then binds them.
 */
export function inlineValues(text: string, values: readonly unknown[]): string | undefined {
  const parts = textParts(text);
  const placeholders = parts.length - 1;
  if (placeholders > values.length) throw new Error(`inlined statement: more placeholders than the ${values.length} values in: ${text}`);
  if (placeholders < values.length) throw new Error(`inlined statement: ${values.length} values for ${placeholders} placeholders in: ${text}`);
  let out = parts[0]!;
  for (let i = 0; i < placeholders; i++) {
    const literal = pgLiteral(values[i]);
    if (literal === undefined) return undefined;
    out += literal + parts[i + 1]!;
  }
  return out;
}

/** A statement with its values written into the text as PostgreSQL literals; refuses what it cannot write. */
export function inlinePostgres({ text, params }: SqlStatement): string {
  const values = params.map((p) => toParam('postgresql', p));
  const out = inlineValues(text, values);
  if (out !== undefined) return out;
  const refused = values.find((v) => pgLiteral(v) === undefined);
  throw new TypeError(`inlined statement: cannot write ${typeof refused === 'number' ? refused : typeof refused} as a literal`);
}

/**
 * Every value is written as a quoted literal of the text node-postgres would send for it
 * as a parameter (`'5'`, `'true'`): a quoted literal has no type until its context gives
 * it one, exactly like an untyped bound parameter, so a statement means the same inlined
 * as bound (a bare `5` is an integer, and `jsonb_column = 5` fails where the parameter
 * works). Quoting also keeps a negative number after a `-` in the text (`x -?`) from
 * becoming `--5`, a comment that would swallow the rest of the query, COMMIT included.
 */
function pgLiteral(v: unknown): string | undefined {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'string') return quoteLiteral(v);
  if (typeof v === 'boolean') return v ? "'true'" : "'false'";
  if (typeof v === 'number' && Number.isFinite(v)) return `'${v}'`;
  return undefined;
}

/**
 * node-postgres's escapeLiteral, output for output (a test compares them): quotes doubled,
 * and with any backslash, backslashes doubled in an E'' string, which reads the same
 * whatever standard_conforming_strings says. Its character-by-character loop cost a
 * noticeable part of every job (the JSON of the audit and ledger rows); two native
 * replaces do not. The leading space of the E'' form keeps a preceding identifier
 * character from joining it.
 */
function quoteLiteral(s: string): string {
  const body = s.replaceAll("'", "''");
  return s.includes('\\') ? ` E'${body.replaceAll('\\', '\\\\')}'` : `'${body}'`;
}
