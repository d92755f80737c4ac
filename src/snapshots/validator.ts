/**
 * Checking snapshot rows as they stream in, tables parents first (the order files list
 * them in): every row against its columns' types (tables.ts), the primary and unique keys,
 * the foreign keys (a row may only point at a row of an earlier table, already seen), the
 * jobs' domain rules (row-rules.ts), and sealed columns against this server's key. The
 * database would refuse most of these too, but only half-way through a restore; checking
 * first lets the API refuse an upload with the row that is wrong and nothing changed.
 *
 * Memory: keys must be remembered to find a repeat, but not as JS strings (a million link
 * ids as a Set of strings take more heap than the rest of a restore). UUID keys, and keys
 * made of foreign keys (a link's pair of nodes), go into an open-addressing table of
 * 32-bit words in typed arrays, outside the JS heap, a few dozen bytes per row; the other
 * keys belong to small tables (settings, configs, nodes) and use Maps.
 */
import { decryptSecret } from '../domain/secrets.js';
import { SnapshotInvalidError } from './errors.js';
import { DomainRules } from './row-rules.js';
import { rowCheck, rowSchema, type SnapshotRow, type SnapshotTables, type TableSpec } from './tables.js';

/** A set of 128-bit keys (four 32-bit words) with the row number each was first seen at. */
class WordSet {
  private words: Uint32Array;
  private rows: Int32Array;
  private mask: number;
  size = 0;

  constructor(capacity = 1024) {
    this.words = new Uint32Array(capacity * 4);
    this.rows = new Int32Array(capacity).fill(-1);
    this.mask = capacity - 1;
  }

  private slot(w0: number, w1: number, w2: number, w3: number): number {
    let h = Math.imul(w0 ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(w1, 0xc2b2ae35) ^ Math.imul(w2, 0x27d4eb2f) ^ w3;
    h ^= h >>> 16;
    h = Math.imul(h, 0x7feb352d);
    h ^= h >>> 15;
    let at = h & this.mask;
    const { words, rows } = this;
    while (rows[at] !== -1) {
      const k = at * 4;
      if (words[k] === w0 && words[k + 1] === w1 && words[k + 2] === w2 && words[k + 3] === w3) return at;
      at = (at + 1) & this.mask;
    }
    return at;
  }

  /** The row the key was first seen at, or -1. */
  get(w: Uint32Array): number {
    return this.rows[this.slot(w[0]!, w[1]!, w[2]!, w[3]!)]!;
  }

  /** Adds the key for `row` unless present; returns the earlier row, or -1 when added. */
  add(w: Uint32Array, row: number): number {
    const at = this.slot(w[0]!, w[1]!, w[2]!, w[3]!);
    const seen = this.rows[at]!;
    if (seen !== -1) return seen;
    this.words.set(w, at * 4);
    this.rows[at] = row;
    if (++this.size * 2 > this.rows.length) this.grow();
    return -1;
  }

  private grow(): void {
    const { words, rows } = this;
    this.words = new Uint32Array(words.length * 2);
    this.rows = new Int32Array(rows.length * 2).fill(-1);
    this.mask = this.rows.length - 1;
    for (let i = 0; i < rows.length; i++) {
      if (rows[i] === -1) continue;
      const k = i * 4;
      const at = this.slot(words[k]!, words[k + 1]!, words[k + 2]!, words[k + 3]!);
      this.words.set(words.subarray(k, k + 4), at * 4);
      this.rows[at] = rows[i]!;
    }
  }
}

const scratch = new Uint32Array(4);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A lowercase UUID (checked by the type checks first) as four words. */
function uuidWords(s: string, out: Uint32Array): Uint32Array {
  out[0] = parseInt(s.slice(0, 8), 16);
  out[1] = parseInt(s.slice(9, 13) + s.slice(14, 18), 16);
  out[2] = parseInt(s.slice(19, 23) + s.slice(24, 28), 16);
  out[3] = parseInt(s.slice(28, 36), 16);
  return out;
}

/** One constraint's memory of the keys seen. */
interface KeyIndex {
  /** The earlier row with the same key, or -1 (the row's key is remembered); null values never repeat. */
  add(row: SnapshotRow, index: number): number;
}

const MAX_PROBLEMS = 5;

const where = (spec: TableSpec, index: number, row: SnapshotRow): string => {
  const pk = spec.primaryKey.length === 1 ? row[spec.primaryKey[0]!] : undefined;
  return `table ${spec.table} row ${index + 1}${typeof pk === 'string' ? ` (${spec.primaryKey[0]} ${pk.slice(0, 64)})` : ''}`;
};

const show = (v: unknown): string => (typeof v === 'string' ? JSON.stringify(v.length > 64 ? `${v.slice(0, 64)}…` : v) : String(v));

/**
 * Columns a snapshot carries still sealed under the exporting server's SECRET_KEY (node
 * private keys stay encrypted at rest inside the file too, so a file and its password are
 * not enough to read them). They open here only if this server has the same SECRET_KEY.
 * The usual way to get this wrong is moving from SQLite, whose key was generated into
 * data/secret.key, to PostgreSQL with a freshly generated SECRET_KEY: the restore would
 * succeed and every node's private key would be unreadable. Refused instead, saying why.
 */
const SEALED_COLUMNS: Readonly<Record<string, string>> = { node: 'private_key_enc' };

interface TableState {
  spec: TableSpec;
  fast: (row: unknown) => boolean;
  keys: { name: string; columns: readonly string[]; index: KeyIndex }[];
  references: { column: string; table: string; target: string }[];
  sealed: string | undefined;
  sealedFailed: number;
  rows: number;
}

/**
 * Checks rows one at a time. `row()` answers whether the row may be written; `finish()`
 * throws the refusal (the first few problems, with their rows) if there was any.
 */
export class SnapshotValidator {
  private readonly problems: string[] = [];
  private more = false;
  /** Problems of types and keys, which the domain rules assume absent. */
  private structural = 0;
  private readonly rules = new DomainRules();
  /** Primary keys of single-uuid-key tables, for the foreign keys that point at them. */
  private readonly uuidKeys = new Map<string, WordSet>();
  private readonly otherKeys = new Map<string, Map<unknown, number>>();
  private readonly tables = new Map<string, TableState>();
  private sealedMismatch: string | undefined;

  constructor(
    specs: readonly TableSpec[],
    /** When given, sealed columns must open with it. */
    private readonly serverKey?: Buffer,
  ) {
    const byName = new Map(specs.map((s) => [s.table, s]));
    for (const spec of specs) {
      const keys = [{ name: 'primary key', columns: spec.primaryKey }, ...spec.uniques].map((c) => ({
        name: c.name,
        columns: c.columns,
        index: this.keyIndex(spec, c.columns, c.name === 'primary key'),
      }));
      const references = spec.columns
        .filter((c) => c.references)
        .map((c) => {
          const target = byName.get(c.references!.table);
          if (!target) throw new Error(`snapshot tables: ${spec.table}.${c.name} references ${c.references!.table}, which is not a snapshot table`);
          return { column: c.name, table: c.references!.table, target: c.references!.column };
        });
      this.tables.set(spec.table, { spec, fast: rowCheck(spec), keys, references, sealed: SEALED_COLUMNS[spec.table], sealedFailed: 0, rows: 0 });
    }
  }

  /** Enough problems found to refuse (one past what is shown, so the message can say there are more). */
  get full(): boolean {
    return this.more;
  }

  /** True when no problem has been found so far. */
  get clean(): boolean {
    return this.problems.length === 0 && this.sealedMismatch === undefined;
  }

  private add(problem: string): void {
    if (this.problems.length < MAX_PROBLEMS) this.problems.push(problem);
    else this.more = true;
  }

  private keyIndex(spec: TableSpec, columns: readonly string[], primary: boolean): KeyIndex {
    const cols = columns.map((name) => spec.columns.find((c) => c.name === name)!);
    if (cols.length === 1 && cols[0]!.kind === 'uuid') {
      const set = new WordSet();
      if (primary) this.uuidKeys.set(spec.table, set);
      const name = cols[0]!.name;
      return {
        add: (row, index) => {
          const v = row[name];
          return v === null ? -1 : set.add(uuidWords(v as string, scratch), index);
        },
      };
    }
    // A key of foreign keys to uuid-keyed tables (a link's two nodes): the referenced rows'
    // numbers, which the referenced tables (earlier in the file) have all been given.
    if (cols.length > 1 && cols.length <= 4 && cols.every((c) => c.references && c.kind === 'uuid')) {
      const set = new WordSet();
      const words = new Uint32Array(4);
      const targets = cols.map((c) => c.references!.table);
      const probe = new Uint32Array(4);
      return {
        add: (row, index) => {
          words.fill(0);
          for (let i = 0; i < cols.length; i++) {
            const v = row[cols[i]!.name];
            if (v === null) return -1;
            const at = this.uuidKeys.get(targets[i]!)?.get(uuidWords(v as string, probe)) ?? -1;
            // A dangling reference is the foreign-key check's to report; such a row never
            // collides with a real one.
            if (at < 0) return -1;
            words[i] = at;
          }
          return set.add(words, index);
        },
      };
    }
    const map = new Map<unknown, number>();
    if (primary && cols.length === 1) this.otherKeys.set(spec.table, map);
    return {
      add: (row, index) => {
        let key: unknown;
        if (cols.length === 1) {
          key = row[cols[0]!.name];
          // SQL unique constraints let NULLs repeat.
          if (key === null) return -1;
        } else {
          const values = cols.map((c) => row[c.name]);
          if (values.some((v) => v === null)) return -1;
          key = JSON.stringify(values);
        }
        const first = map.get(key);
        if (first !== undefined) return first;
        map.set(key, index);
        return -1;
      },
    };
  }

  private referenced(table: string, value: unknown): boolean {
    const uuids = this.uuidKeys.get(table);
    if (uuids) return typeof value === 'string' && uuids.get(uuidWords(value, scratch)) >= 0;
    return this.otherKeys.get(table)?.has(value) ?? false;
  }

  /**
   * Checks one row (the table's `index`-th, 0-based), at the current schema. False when the
   * row breaks something; the refusal comes from finish().
   */
  row(table: string, index: number, row: SnapshotRow): boolean {
    const t = this.tables.get(table);
    if (!t) throw new Error(`snapshot validator: unknown table ${table}`);
    t.rows++;
    const { spec } = t;
    if (!t.fast(row)) {
      const result = rowSchema(spec).safeParse(row);
      if (!result.success) {
        const issues = result.error.issues.slice(0, 3).map((iss) => {
          const column = iss.path.length > 0 ? `column ${iss.path.map(String).join('.')}` : 'row';
          const message = iss.code === 'invalid_type' && iss.path.length === 1 && !Object.hasOwn(row ?? {}, String(iss.path[0])) ? 'is missing' : iss.message;
          return `${column}: ${message}`;
        });
        this.add(`${where(spec, index, row ?? {})}: ${issues.join(', ')}`);
        this.structural++;
        // Its key still counts as present, so that rows pointing at it report nothing more.
        const pk = spec.primaryKey.length === 1 ? row[spec.primaryKey[0]!] : undefined;
        if (typeof pk === 'string' && UUID.test(pk)) t.keys[0]!.index.add(row, index);
        return false;
      }
    }
    let ok = true;
    for (const key of t.keys) {
      const first = key.index.add(row, index);
      if (first >= 0) {
        const values = key.columns.map((c) => row[c]);
        this.add(
          `${where(spec, index, row)}: ${key.name === 'primary key' ? 'primary key' : `unique ${key.name}`} ` +
            `(${key.columns.join(', ')}) = ${values.map(show).join(', ')} repeats row ${first + 1}`,
        );
        ok = false;
        this.structural++;
      }
    }
    for (const ref of t.references) {
      const value = row[ref.column];
      if (value !== null && !this.referenced(ref.table, value)) {
        this.add(`${where(spec, index, row)}: column ${ref.column} = ${show(value)} is no ${ref.target} in table ${ref.table}`);
        ok = false;
        this.structural++;
      }
    }
    // The jobs' rules assume the keys hold (a node's config exists, a credential's node is
    // one node): they run while nothing else is wrong.
    this.rules.remember(table, row);
    if (ok && this.structural === 0) {
      const found = this.rules.check(table, row);
      if (found) {
        for (const [column, problem] of found) this.add(`${where(spec, index, row)}: column ${column}: ${problem}`);
        ok = false;
      }
    }
    if (ok && t.sealed && this.serverKey && row[t.sealed] !== null) {
      // Null: nothing sealed (a node whose agent holds its own key).
      try {
        decryptSecret(row[t.sealed] as string, this.serverKey);
      } catch {
        t.sealedFailed++;
      }
    }
    return ok;
  }

  /** Throws the refusal, if any row broke something. */
  finish(): void {
    if (this.problems.length > 0) {
      throw new SnapshotInvalidError(
        'constraint_violation',
        `rows break a constraint: ${this.problems.join('; ')}${this.more ? `; (first ${MAX_PROBLEMS} problems shown)` : ''}`,
      );
    }
    for (const t of this.tables.values()) {
      if (t.sealedFailed === 0) continue;
      throw new SnapshotInvalidError(
        'secret_key_mismatch',
        `${t.sealedFailed} of ${t.rows} values of ${t.spec.table}.${t.sealed} do not open with this server's SECRET_KEY: the snapshot comes ` +
          "from a meshq with a different SECRET_KEY. Set SECRET_KEY to the exporting server's value (with SQLite, the " +
          'content of data/secret.key), restart, and upload again',
      );
    }
  }
}

/**
 * Checks whole tables (already at the current schema) the way a streamed restore does,
 * and throws SnapshotInvalidError naming the first few offending rows if they do not fit.
 * Row numbers are 1-based positions in the file's table.
 */
export function validateSnapshotTables(tables: SnapshotTables, specs: readonly TableSpec[], serverKey?: Buffer): void {
  const known = new Set(specs.map((s) => s.table));
  const unknown = Object.keys(tables).filter((t) => !known.has(t));
  const missing = specs.filter((s) => !Object.hasOwn(tables, s.table)).map((s) => s.table);
  if (unknown.length > 0 || missing.length > 0) throw tablesMismatch(unknown, missing);
  const validator = new SnapshotValidator(specs, serverKey);
  for (const spec of specs) {
    const rows = tables[spec.table]!;
    for (let i = 0; i < rows.length && !validator.full; i++) validator.row(spec.table, i, rows[i]!);
  }
  validator.finish();
}

/** The refusal of a file whose tables are not this meshq's. */
export function tablesMismatch(unknown: readonly string[], missing: readonly string[]): SnapshotInvalidError {
  const parts = [
    ...(unknown.length ? [`tables this meshq does not have: ${unknown.join(', ')}`] : []),
    ...(missing.length ? [`missing tables: ${missing.join(', ')}`] : []),
  ];
  return new SnapshotInvalidError('bad_payload', `the snapshot's tables do not match this meshq's schema: ${parts.join('; ')}`);
}
