/**
 * What a stored JSON value may be: the one rule behind the settings.update payload and
 * every JSON column a snapshot restores, so that nothing a job accepts can later make an
 * export fail or a file unrestorable.
 *
 * - No NUL character in any string or object key: PostgreSQL's text and jsonb cannot hold
 *   it, SQLite can. A value that SQLite accepted would then restore nowhere else.
 * - Strings are well-formed Unicode (no lone surrogate): jsonb refuses an unpaired
 *   `\ud800` escape, and a driver encoding one as UTF-8 silently replaces it.
 * - Bounded nesting: SQLite's JSON functions (which the export reads rows with) stop at
 *   1,000 levels, and every recursive walk of a value (ours, zod's, jsonb's) needs stack
 *   in proportion to its depth. The bound is far below any of those.
 * - Plain JSON only: strings, finite numbers, booleans, null, arrays, plain objects.
 * - A bound on the encoded size where the caller asks for one (settings values).
 *
 * The walk refuses as soon as it is deeper than the bound, so a hostile value of a
 * million levels costs no more than one of MAX_JSON_DEPTH levels, and it never recurses
 * deeper than that bound.
 */

/** Levels of arrays and objects inside each other: `[[1]]` has two. */
export const MAX_JSON_DEPTH = 64;
/** A setting's value, as UTF-8 JSON text, when settings.update writes it. */
export const MAX_SETTING_VALUE_BYTES = 64 * 1024;
/**
 * A setting's value in a snapshot row. Larger than what a write may set: before the write
 * bound existed, settings.update took values up to the API's request size (1 MiB by
 * default), and a database holding one must still export a file that restores. Anything a
 * write accepts today is far inside it.
 */
export const MAX_RESTORED_SETTING_VALUE_BYTES = 1024 * 1024;

export interface JsonValueLimits {
  /** Levels of nesting allowed (MAX_JSON_DEPTH unless given). */
  maxDepth?: number;
  /** Bytes of the value's JSON text (UTF-8); unbounded unless given. */
  maxBytes?: number;
}

export interface JsonValueProblem {
  /** Where inside the value: object keys and array indexes, outermost first. */
  path: (string | number)[];
  message: string;
}

const NUL = 'contains a NUL character (\\u0000), which PostgreSQL cannot store';
const SURROGATE = 'contains a lone UTF-16 surrogate (not valid Unicode), which PostgreSQL cannot store';

/** Quoted and shortened, so a pasted megabyte does not end up in an error message. */
const showKey = (k: string): string => JSON.stringify(k.length > 40 ? `${k.slice(0, 40)}…` : k);

/** Why a string cannot be stored as it is on both databases (a NUL, a lone surrogate), or null. */
export const stringProblem = (s: string): string | null => (s.includes('\u0000') ? NUL : s.isWellFormed() ? null : SURROGATE);

/**
 * Why `value` is not a JSON value meshq stores, or null when it is. Allocates nothing on
 * the way when the value is fine (the path is built only for a refusal), so a restore can
 * run it over every JSON column of every row.
 */
export function jsonValueProblem(value: unknown, limits: JsonValueLimits = {}): JsonValueProblem | null {
  const maxDepth = limits.maxDepth ?? MAX_JSON_DEPTH;
  const found = walk(value, 0, maxDepth);
  if (found) return { path: found.path.reverse(), message: found.message };
  if (limits.maxBytes !== undefined) {
    // Only after the walk: the value is known to be small enough in depth to stringify.
    const text = JSON.stringify(value);
    // UTF-8 takes at most 3 bytes per UTF-16 unit: count only when it could matter.
    if (text.length * 3 > limits.maxBytes) {
      const bytes = Buffer.byteLength(text, 'utf8');
      if (bytes > limits.maxBytes) return { path: [], message: `is ${bytes} bytes of JSON, more than ${limits.maxBytes}` };
    }
  }
  return null;
}

const NO_PATH = Symbol('no path');
type Found = JsonValueProblem & { [NO_PATH]?: true };

/** The problem with its path in reverse (innermost first), or null. */
function walk(v: unknown, depth: number, maxDepth: number): Found | null {
  switch (typeof v) {
    case 'string': {
      const m = stringProblem(v);
      return m ? { path: [], message: m } : null;
    }
    case 'number':
      return Number.isFinite(v) ? null : { path: [], message: `${String(v)} is not a JSON number` };
    case 'boolean':
      return null;
    case 'object': {
      if (v === null) return null;
      // No path: it would be maxDepth segments long and say nothing the message does not.
      if (depth >= maxDepth) return { path: [], message: `is nested more than ${maxDepth} levels deep`, [NO_PATH]: true };
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) {
          const p = walk(v[i], depth + 1, maxDepth);
          if (p) {
            if (!p[NO_PATH]) p.path.push(i);
            return p;
          }
        }
        return null;
      }
      const proto = Object.getPrototypeOf(v) as unknown;
      if (proto !== Object.prototype && proto !== null) return { path: [], message: 'is not a plain JSON object' };
      for (const key in v) {
        if (!Object.hasOwn(v, key)) continue;
        const k = stringProblem(key);
        if (k) return { path: [], message: `key ${showKey(key)} ${k}` };
        const p = walk((v as Record<string, unknown>)[key], depth + 1, maxDepth);
        if (p) {
          if (!p[NO_PATH]) p.path.push(key);
          return p;
        }
      }
      return null;
    }
    default:
      return { path: [], message: `a ${typeof v} is not a JSON value` };
  }
}

/** "a.b[2]": a path inside a value as a person reads it; empty for the value itself. */
export function formatJsonPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const segment of path) out += typeof segment === 'number' ? `[${segment}]` : out === '' ? segment : `.${segment}`;
  return out;
}

/** The problem as one phrase: `a.b[2] contains a NUL character …` or `is nested …`. */
export function describeJsonProblem(problem: JsonValueProblem): string {
  const at = formatJsonPath(problem.path);
  return at === '' ? problem.message : `${at} ${problem.message}`;
}
