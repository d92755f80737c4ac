/**
 * PostgreSQL's COPY text format and snapshot rows, both ways, without a JS object per row.
 *
 * Export: `COPY (select …) TO STDOUT` bytes become the file's JSON bytes directly
 * (copyTextToJson). Reading 240,000 rows as objects through node-postgres, converting,
 * sorting and stringifying them kept the worker's main thread busy for the whole export;
 * this is one pass over bytes, with no strings, no row objects and no UTF-8 decoding or
 * encoding in between.
 *
 * Restore: snapshot rows become COPY text for `COPY … FROM STDIN` (rowsToCopyText), which
 * PostgreSQL loads with its bulk-insert path, as `psql` loads a `pg_dump`.
 *
 * COPY text (https://www.postgresql.org/docs/current/sql-copy.html, "Text Format"): one
 * line per row, columns separated by tabs, NULL written `\N`; in values a backslash is
 * `\\`, and backspace, form feed, newline, carriage return, tab and vertical tab are
 * written `\b \f \n \r \t \v`. Every other byte stands for itself (the connection's
 * encoding is UTF-8).
 */
import type { ColumnKind, ColumnSpec, SnapshotRow, TableSpec } from './tables.js';

const TAB = 0x09;
const NL = 0x0a;
const BACKSLASH = 0x5c;
const QUOTE = 0x22;
const N = 0x4e;

/**
 * How each column's COPY text becomes its snapshot JSON:
 * QUOTED: text that needs no escaping (uuid); DATETIME: timestamptz as PostgreSQL writes
 * it in UTC with DateStyle ISO, rewritten to the snapshot's ISO 8601 form; NUMBER: digits
 * as they are; BOOLEAN: t/f; TEXT: a JSON string (COPY escapes undone, JSON.stringify's
 * escapes applied); JSON: the column's JSON text (jsonb's output, which JSON.parse reads
 * to the same value node-postgres would hand over).
 */
const QUOTED = 0;
const NUMBER = 1;
const BOOLEAN = 2;
const TEXT = 3;
const JSON_TEXT = 4;
const DATETIME = 5;

const FIELD: Record<ColumnKind, number> = {
  uuid: QUOTED,
  datetime: DATETIME,
  integer: NUMBER,
  boolean: BOOLEAN,
  string: TEXT,
  text: TEXT,
  json: JSON_TEXT,
};

const ascii = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));

/** JSON.stringify's escape of each byte that needs one (controls, quote, backslash). */
const JSON_ESCAPE: (Uint8Array | undefined)[] = Array.from({ length: 256 }, (_, b) => {
  if (b >= 0x20 && b !== QUOTE && b !== BACKSLASH) return undefined;
  const short: Record<number, string> = { 0x08: '\\b', 0x09: '\\t', 0x0a: '\\n', 0x0c: '\\f', 0x0d: '\\r', [QUOTE]: '\\"', [BACKSLASH]: '\\\\' };
  return ascii(short[b] ?? `\\u${b.toString(16).padStart(4, '0')}`);
});

/** 1 for the bytes JSON_ESCAPE escapes. */
const ESCAPED = Uint8Array.from(JSON_ESCAPE, (e) => (e === undefined ? 0 : 1));

/** The byte a COPY escape `\x` stands for. */
const COPY_UNESCAPE = new Uint8Array(256).map((_, b) => b);
for (const [c, b] of [['b', 0x08], ['f', 0x0c], ['n', 0x0a], ['r', 0x0d], ['t', 0x09], ['v', 0x0b]] as const) COPY_UNESCAPE[c.charCodeAt(0)] = b;

const TRUE = ascii('true');
const FALSE = ascii('false');
const EMPTY = Buffer.alloc(0);

/** What the session must say for CopyTextToJson to read date-times (SET LOCAL, inside the transaction). */
export const PG_COPY_TEXT_SESSION = "set local timezone to 'UTC'; set local datestyle to 'ISO, YMD'";

/**
 * Output pieces are handed on at about this size, each in a buffer of its own (the writer
 * compresses each as a gzip member as it comes, see writer.ts), with room past it for the
 * row that crosses the line.
 */
const PIECE_BYTES = 4 * 1024 * 1024;
const PIECE_SLACK = 256 * 1024;

export interface JsonPiece {
  /** Rows of one table as JSON objects joined by commas, after a comma unless they are the table's first. */
  bytes: Buffer;
  rows: number;
}

/**
 * Converts one table's `COPY (select <spec's columns, in order> …) TO STDOUT` text into
 * the snapshot's JSON for those rows: the same values, keys and key order as
 * JSON.stringify of the rows the JS reader makes. Date-times must come in PostgreSQL's
 * ISO output in UTC (session TimeZone UTC, DateStyle ISO: PG_COPY_TEXT_SESSION). Feed it
 * the stream's chunks in order; it returns finished pieces as they fill.
 */
export class CopyTextToJson {
  private readonly kinds: Uint8Array;
  /** `{"first":`, `,"second":`, …, as bytes. */
  private readonly prefixes: Uint8Array[];
  /** Most bytes a row can add beyond six per input byte (keys, quotes, braces, comma). */
  private readonly rowOverhead: number;
  /** The start of a line cut off at the end of the previous chunk. */
  private carry: Buffer | undefined;
  private out: Buffer = EMPTY;
  private at = 0;
  private rowsInPiece = 0;
  /** Rows converted so far. */
  rows = 0;

  /**
   * `allocate` gives the buffers pieces are written in (each is handed on whole, never
   * written again by this converter): the writer's own, reused once compressed.
   */
  constructor(
    readonly spec: TableSpec,
    private readonly allocate: (bytes: number) => Buffer = Buffer.allocUnsafe,
  ) {
    this.kinds = Uint8Array.from(spec.columns, (c) => FIELD[c.kind]);
    this.prefixes = spec.columns.map((c, i) => Buffer.from(`${i === 0 ? '{' : ','}${JSON.stringify(c.name)}:`, 'utf8'));
    this.rowOverhead = this.prefixes.reduce((n, p) => n + p.length + 2, 0) + 2;
  }

  /** Converts the complete lines in `chunk` (a line cut at its end waits for the next). */
  push(chunk: Buffer): JsonPiece[] {
    const pieces: JsonPiece[] = [];
    let p = 0;
    if (this.carry) {
      // Only the cut line is joined up (copying every chunk whole was a measurable share
      // of the conversion).
      const nl = chunk.indexOf(NL);
      if (nl < 0) {
        this.carry = Buffer.concat([this.carry, chunk]);
        return pieces;
      }
      const line = Buffer.concat([this.carry, chunk.subarray(0, nl + 1)]);
      this.carry = undefined;
      this.lines(line, 0, line.length, pieces);
      p = nl + 1;
    }
    const limit = chunk.lastIndexOf(NL) + 1;
    if (limit > p) this.lines(chunk, p, limit, pieces);
    const rest = Math.max(p, limit);
    if (rest < chunk.length) this.carry = Buffer.from(chunk.subarray(rest));
    return pieces;
  }

  /** The rest, once the stream ended. */
  end(): JsonPiece | undefined {
    if (this.carry) throw new Error(`COPY of ${this.spec.table}: the data ends inside a row`);
    return this.rowsInPiece > 0 ? this.take() : undefined;
  }

  /** Converts the lines of src[p..limit), which ends with a newline. */
  private lines(src: Buffer, p: number, limit: number, pieces: JsonPiece[]): void {
    while (p < limit) {
      // Room for the row, without looking for its end: at worst six bytes per input byte
      // (a control character becomes `\u00XX`) to the end of the chunk; only past
      // PIECE_SLACK (a chunk of unusual size) is the row's own end looked up.
      let need = this.rowOverhead + 6 * (limit - p);
      if (need > PIECE_SLACK) need = this.rowOverhead + 6 * (src.indexOf(NL, p) - p);
      if (this.at + need > this.out.length) {
        if (this.rowsInPiece > 0) pieces.push(this.take());
        this.out = this.allocate(Math.max(PIECE_BYTES, need) + PIECE_SLACK);
      }
      p = this.row(src, p);
      if (this.at >= PIECE_BYTES) pieces.push(this.take());
    }
  }

  /**
   * A date-time outside what the export writes: years 0001-9999 UTC, at most milliseconds
   * (to_char and Date.toISOString disagree beyond that, and such a file would not restore).
   */
  private badDateTime(src: Buffer, p: number): never {
    const start = src.lastIndexOf(TAB, p) + 1;
    const end = src.subarray(p).findIndex((b) => b === TAB || b === NL);
    const text = src.subarray(start, end < 0 ? src.length : p + end).toString('utf8');
    throw new Error(`COPY of ${this.spec.table}: row ${this.rows + 1} has a date-time the snapshot cannot carry: ${JSON.stringify(text.slice(0, 64))}`);
  }

  /** The piece so far, in the buffer it was written in (no copy); the next gets a new one. */
  private take(): JsonPiece {
    const piece = { bytes: this.out.subarray(0, this.at), rows: this.rowsInPiece };
    this.out = EMPTY;
    this.at = 0;
    this.rowsInPiece = 0;
    return piece;
  }

  /**
   * The line at src[p..] (complete: it ends with a newline) as a JSON object; returns
   * where the next line starts. Bytes are copied one at a time: TypedArray.set per field
   * was a third of the time on rows this short.
   */
  private row(src: Buffer, p: number): number {
    const out = this.out;
    let o = this.at;
    if (this.rows > 0) out[o++] = 0x2c; // ',' (also before a piece's first row: SnapshotWriter.rowBytes)
    const kinds = this.kinds;
    const prefixes = this.prefixes;
    const n = kinds.length;
    for (let i = 0; i < n; i++) {
      const prefix = prefixes[i]!;
      for (let k = 0; k < prefix.length; k++) out[o++] = prefix[k]!;
      let c = src[p]!;
      if (c === BACKSLASH && src[p + 1] === N) {
        out[o++] = 0x6e; // null
        out[o++] = 0x75;
        out[o++] = 0x6c;
        out[o++] = 0x6c;
        c = src[(p += 2)]!;
      } else {
        switch (kinds[i]) {
          case QUOTED:
            out[o++] = QUOTE;
            while (c !== TAB && c !== NL) {
              out[o++] = c;
              c = src[++p]!;
            }
            out[o++] = QUOTE;
            break;
          case DATETIME:
            // `2026-01-02 03:04:05.6+00` -> `"2026-01-02T03:04:05.600Z"`: to the millisecond,
            // as Date.toISOString writes (the columns are timestamptz(3)). Formatting it in
            // the query instead (to_char) cost the server a fifth of the export's COPY time.
            if (src[p + 4] !== 0x2d || src[p + 7] !== 0x2d || src[p + 10] !== 0x20 || src[p + 13] !== 0x3a || src[p + 16] !== 0x3a) this.badDateTime(src, p);
            out[o++] = QUOTE;
            for (let k = 0; k < 10; k++) out[o++] = src[p++]!;
            out[o++] = 0x54; // T
            p++;
            for (let k = 0; k < 8; k++) out[o++] = src[p++]!;
            out[o++] = 0x2e; // .
            c = src[p]!;
            if (c === 0x2e) {
              let digits = 0;
              while ((c = src[++p]!) >= 0x30 && c <= 0x39) {
                if (digits++ < 3) out[o++] = c;
              }
              // More than milliseconds cannot be in a timestamptz(3); never rounded here.
              if (digits > 3) this.badDateTime(src, p);
              for (; digits < 3; digits++) out[o++] = 0x30;
            } else {
              out[o++] = 0x30;
              out[o++] = 0x30;
              out[o++] = 0x30;
            }
            if (c !== 0x2b /* + */ || src[p + 1] !== 0x30 || src[p + 2] !== 0x30 || (src[p + 3] !== TAB && src[p + 3] !== NL)) this.badDateTime(src, p);
            out[o++] = 0x5a; // Z
            out[o++] = QUOTE;
            c = src[(p += 3)]!;
            break;
          case NUMBER:
            while (c !== TAB && c !== NL) {
              out[o++] = c;
              c = src[++p]!;
            }
            break;
          case BOOLEAN: {
            const v = c === 0x74 /* t */ ? TRUE : FALSE;
            for (let k = 0; k < v.length; k++) out[o++] = v[k]!;
            c = src[++p]!;
            break;
          }
          case TEXT:
            out[o++] = QUOTE;
            while (c !== TAB && c !== NL) {
              if (c === BACKSLASH) c = COPY_UNESCAPE[src[++p]!]!;
              if (ESCAPED[c] === 0) out[o++] = c;
              else {
                const escape = JSON_ESCAPE[c]!;
                for (let k = 0; k < escape.length; k++) out[o++] = escape[k]!;
              }
              c = src[++p]!;
            }
            out[o++] = QUOTE;
            break;
          default:
            while (c !== TAB && c !== NL) {
              out[o++] = c === BACKSLASH ? COPY_UNESCAPE[src[++p]!]! : c;
              c = src[++p]!;
            }
        }
      }
      if (c !== (i === n - 1 ? NL : TAB)) throw new Error(`COPY of ${this.spec.table}: row ${this.rows + 1} does not have the ${n} columns selected`);
      p++;
    }
    out[o++] = 0x7d; // '}'
    this.at = o;
    this.rowsInPiece++;
    this.rows++;
    return p;
  }
}

/* ------------------------------------------------------------------ restore */

const COPY_ESCAPES = /[\\\t\n\r\b\f\v]/;
const COPY_ESCAPE_ALL = /[\\\t\n\r\b\f\v]/g;
const COPY_ESCAPE_OF: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r', '\b': '\\b', '\f': '\\f', '\v': '\\v' };
const copyText = (s: string): string => (COPY_ESCAPES.test(s) ? s.replace(COPY_ESCAPE_ALL, (c) => COPY_ESCAPE_OF[c]!) : s);

/**
 * One column's value as COPY text. Values were validated (tables.ts): a uuid is 36
 * lowercase hex characters and dashes, an integer an int4. Date-times go as ISO text
 * (PostgreSQL reads the zone); a non-canonical one is normalised through Date first, to
 * the millisecond, exactly as the ORM would have stored it. JSON goes as its text.
 */
function copyValue(col: ColumnSpec, v: unknown): string {
  if (v === null || v === undefined) return '\\N';
  switch (col.kind) {
    case 'uuid':
    case 'integer':
      return String(v as string | number);
    case 'boolean':
      return v ? 't' : 'f';
    case 'datetime': {
      const s = v as string;
      return s.length === 24 && s.endsWith('Z') ? s : new Date(s).toISOString();
    }
    case 'json':
      return copyText(JSON.stringify(v));
    default:
      return copyText(v as string);
  }
}

/** rows[at..end) as COPY text lines, columns in the spec's order. */
export function rowsToCopyText(spec: TableSpec, rows: readonly SnapshotRow[], at: number, end: number): string {
  const columns = spec.columns;
  const n = columns.length;
  const lines = new Array<string>(end - at);
  const fields = new Array<string>(n);
  for (let i = at; i < end; i++) {
    const row = rows[i]!;
    for (let c = 0; c < n; c++) {
      const col = columns[c]!;
      fields[c] = copyValue(col, row[col.name]);
    }
    lines[i - at] = fields.join('\t');
  }
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const COMMA = 0x2c;
const COLON = 0x3a;
const MINUS = 0x2d;
const ZERO = 0x30;
const NINE = 0x39;
const isJsonSpace = (c: number): boolean => c === 0x20 || c === NL || c === 0x0d || c === TAB;
/** Digits an integer in a jsonb value may have for JSON.parse and back to give the same number. */
const SAFE_DIGITS = 15;

/**
 * Snapshot rows as the file's JSON bytes (one object each) become COPY text lines directly,
 * without a JS object or a string per row: the restore's way for rows it neither checks nor
 * upgrades (src/snapshots/reader.ts), where parsing every row, then building its line as
 * strings and encoding those, was most of the worker's CPU.
 *
 * The lines are exactly rowsToCopyText's for JSON.parse of the same bytes (duplicate keys:
 * the last one counts; keys that are not columns are ignored; a missing column is NULL).
 * A value is copied as it is where that gives the same text: a string without escapes
 * (uuid, text, a canonical date-time: JSON forbids control characters in strings, so
 * there is nothing for COPY to escape), an integer in plain digits, true/false, null. A
 * jsonb value goes as its JSON text (COPY-escaped), which PostgreSQL reads to the same
 * value as JSON.stringify's text, unless it has a number JSON.parse would change (a
 * fraction, an exponent, -0, more than SAFE_DIGITS digits). Anything else (escapes, other
 * date-time forms) is parsed alone and written by copyValue, as before.
 *
 * The bytes must be valid UTF-8 JSON (the caller checks UTF-8; the restore takes this path
 * only for bytes the API's check parsed); anything else it cannot read throws.
 */
export class JsonRowsToCopy {
  private readonly names: Buffer[];
  private readonly starts: Int32Array;
  private readonly ends: Int32Array;
  private readonly escaped: Uint8Array;
  private out: Buffer = EMPTY;
  private at = 0;

  constructor(readonly spec: TableSpec) {
    this.names = spec.columns.map((c) => Buffer.from(c.name, 'utf8'));
    const n = spec.columns.length;
    this.starts = new Int32Array(n);
    this.ends = new Int32Array(n);
    this.escaped = new Uint8Array(n);
  }

  /** The rows as COPY text lines, in a buffer of their own. */
  convert(rows: readonly Buffer[]): Buffer {
    let bytes = 0;
    for (const r of rows) bytes += r.length;
    // Copied values only shrink; escapes and fallbacks grow the buffer as needed (ensure).
    this.out = Buffer.allocUnsafe(bytes + rows.length * (this.names.length * 3 + 1) + 1024);
    this.at = 0;
    for (const r of rows) this.row(r);
    const out = this.out.subarray(0, this.at);
    this.out = EMPTY;
    return out;
  }

  private ensure(n: number): void {
    if (this.at + n <= this.out.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.out.length * 2, this.at + n + 1024));
    this.out.copy(bigger, 0, 0, this.at);
    this.out = bigger;
  }

  private fail(what: string): never {
    throw new Error(`snapshot restore: a row of ${this.spec.table} is not the JSON it should be (${what})`);
  }

  private column(b: Buffer, from: number, to: number, hint: number): number {
    const names = this.names;
    const len = to - from;
    for (let k = 0; k < names.length; k++) {
      const c = (hint + k) % names.length;
      const name = names[c]!;
      if (name.length !== len) continue;
      let i = 0;
      while (i < len && name[i] === b[from + i]) i++;
      if (i === len) return c;
    }
    return -1;
  }

  /** The end of the string whose opening quote is at `p`; sets `this.sawEscape` if it has one. */
  private sawEscape = false;
  private stringEnd(b: Buffer, p: number): number {
    const n = b.length;
    let e = p + 1;
    let esc = false;
    for (;;) {
      if (e >= n) this.fail('unterminated string');
      const c = b[e]!;
      if (c === QUOTE) break;
      if (c === BACKSLASH) {
        esc = true;
        e += 2;
      } else {
        if (c < 0x20) this.fail('a control character in a string');
        e++;
      }
    }
    this.sawEscape = esc;
    return e + 1;
  }

  private row(b: Buffer): void {
    const n = b.length;
    const starts = this.starts;
    starts.fill(-1);
    let p = 0;
    while (p < n && isJsonSpace(b[p]!)) p++;
    if (b[p] !== OPEN_BRACE) this.fail('not an object');
    p++;
    let hint = 0;
    for (;;) {
      while (p < n && isJsonSpace(b[p]!)) p++;
      if (b[p] === CLOSE_BRACE) break;
      if (b[p] !== QUOTE) this.fail('expected a key');
      const keyEnd = this.stringEnd(b, p);
      const col = this.sawEscape ? this.spec.columns.findIndex((c) => c.name === (JSON.parse(b.toString('utf8', p, keyEnd)) as string)) : this.column(b, p + 1, keyEnd - 1, hint);
      p = keyEnd;
      while (p < n && isJsonSpace(b[p]!)) p++;
      if (b[p] !== COLON) this.fail('expected ":"');
      p++;
      while (p < n && isJsonSpace(b[p]!)) p++;
      const vs = p;
      const c = b[p];
      let esc = false;
      if (c === QUOTE) {
        p = this.stringEnd(b, p);
        esc = this.sawEscape;
      } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
        let depth = 0;
        for (;;) {
          if (p >= n) this.fail('unterminated value');
          const d = b[p]!;
          if (d === QUOTE) {
            p = this.stringEnd(b, p);
            continue;
          }
          if (d === OPEN_BRACE || d === OPEN_BRACKET) depth++;
          else if (d === CLOSE_BRACE || d === CLOSE_BRACKET) depth--;
          p++;
          if (depth === 0) break;
        }
      } else {
        while (p < n) {
          const d = b[p]!;
          if (d === COMMA || d === CLOSE_BRACE || isJsonSpace(d)) break;
          p++;
        }
        if (p === vs) this.fail('expected a value');
      }
      if (col >= 0) {
        starts[col] = vs;
        this.ends[col] = p;
        this.escaped[col] = esc ? 1 : 0;
        hint = col + 1;
      }
      while (p < n && isJsonSpace(b[p]!)) p++;
      if (b[p] === COMMA) {
        p++;
        continue;
      }
      if (b[p] === CLOSE_BRACE) break;
      this.fail('expected "," or "}"');
    }
    const columns = this.spec.columns;
    for (let c = 0; c < columns.length; c++) {
      this.ensure(2);
      if (c > 0) this.out[this.at++] = TAB;
      this.value(columns[c]!, b, starts[c]!, this.ends[c]!, this.escaped[c] === 1);
    }
    this.ensure(1);
    this.out[this.at++] = NL;
  }

  private copy(b: Buffer, from: number, to: number): void {
    this.ensure(to - from);
    this.at += b.copy(this.out, this.at, from, to);
  }

  private value(col: ColumnSpec, b: Buffer, vs: number, ve: number, escaped: boolean): void {
    const first = vs < 0 ? 0 : b[vs]!;
    if (vs < 0 || (first === 0x6e && ve - vs === 4)) {
      // missing, or null
      this.ensure(2);
      this.out[this.at++] = BACKSLASH;
      this.out[this.at++] = N;
      return;
    }
    switch (col.kind) {
      case 'uuid':
      case 'string':
      case 'text':
        if (first === QUOTE && !escaped) return this.copy(b, vs + 1, ve - 1);
        break;
      case 'datetime':
        if (first === QUOTE && !escaped && ve - vs === 26 && b[ve - 2] === 0x5a) return this.copy(b, vs + 1, ve - 1);
        break;
      case 'integer':
        if (plainInteger(b, vs, ve)) return this.copy(b, vs, ve);
        break;
      case 'boolean':
        if (first === 0x74 && ve - vs === 4) return this.copy(TRUE_T, 0, 1);
        if (first === 0x66 && ve - vs === 5) return this.copy(FALSE_F, 0, 1);
        break;
      case 'json':
        if (this.jsonText(b, vs, ve)) return;
        break;
    }
    const text = copyValue(col, JSON.parse(b.toString('utf8', vs, ve)));
    this.ensure(Buffer.byteLength(text, 'utf8'));
    this.at += this.out.write(text, this.at, 'utf8');
  }

  /** A jsonb value's JSON text, COPY-escaped, unless a number in it would not read back the same through JSON.parse. */
  private jsonText(b: Buffer, vs: number, ve: number): boolean {
    let digits = 0;
    for (let p = vs; p < ve; p++) {
      const c = b[p]!;
      if (c === QUOTE) {
        p = this.stringEnd(b, p) - 1;
        digits = 0;
        continue;
      }
      if (c >= ZERO && c <= NINE) {
        if (++digits > SAFE_DIGITS) return false;
        continue;
      }
      if (digits > 0 && (c === 0x2e || c === 0x65 || c === 0x45)) return false; // . e E
      if (c === MINUS && b[p + 1] === ZERO && !(b[p + 2]! >= ZERO && b[p + 2]! <= NINE)) return false; // -0
      digits = 0;
    }
    this.ensure(2 * (ve - vs));
    const out = this.out;
    let o = this.at;
    for (let p = vs; p < ve; p++) {
      const c = b[p]!;
      if (c === BACKSLASH) {
        out[o++] = BACKSLASH;
        out[o++] = BACKSLASH;
      } else if (c === TAB || c === NL || c === 0x0d) {
        out[o++] = BACKSLASH;
        out[o++] = c === TAB ? 0x74 : c === NL ? 0x6e : 0x72;
      } else out[o++] = c;
    }
    this.at = o;
    return true;
  }
}

const TRUE_T = Buffer.from('t');
const FALSE_F = Buffer.from('f');

/** `0` or `-?[1-9][0-9]*` of at most ten digits: what String(JSON.parse(it)) writes back unchanged. */
function plainInteger(b: Buffer, vs: number, ve: number): boolean {
  let p = vs;
  if (b[p] === MINUS) p++;
  const digits = ve - p;
  if (digits < 1 || digits > 10) return false;
  if (b[p] === ZERO) return digits === 1 && p === vs;
  for (; p < ve; p++) if (b[p]! < ZERO || b[p]! > NINE) return false;
  return true;
}
