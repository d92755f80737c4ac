/**
 * An incremental reader of a snapshot payload's JSON text: the bytes arrive in chunks cut
 * anywhere, and the reader hands over the top-level fields and then each row of each table
 * as soon as its last byte is in, so that neither the text nor the rows are ever held
 * whole.
 *
 * It does not tokenize values itself: it only finds where each top-level value and each
 * row ends (tracking nesting and strings, skipping through strings with indexOf) and
 * passes that slice to JSON.parse, which is native and validates the slice completely. The
 * payload's shape is `{ …fields, "tables": { "<table>": [ row, … ], … } }`; a `tables`
 * (or table) value of another kind is parsed whole and handed over as a field (or table
 * value) for the caller to refuse with a reason.
 */
import { invalid } from './container.js';

export interface PayloadEvents {
  /** A top-level field other than an object `tables`. */
  field(name: string, value: unknown): void;
  /** `tables` opens (as an object): every field before it has been handed over. */
  tablesStart(): void;
  /** A table opens (as an array); its rows follow. */
  tableStart(name: string): void;
  row(value: unknown): void;
  /**
   * A row's JSON bytes, before they are parsed: true if the caller took them as they are
   * (then no row() follows for it), false to have them parsed and handed to row(). The
   * bytes are one complete value; they stay valid (nothing writes over them).
   */
  rowBytes?(bytes: Buffer): boolean;
  tableEnd(name: string): void;
  /** A table whose value is not an array, parsed whole. */
  tableValue(name: string, value: unknown): void;
}

/** The largest single value (one row, one top-level field) the reader gathers. */
export const MAX_VALUE_BYTES = 64 * 1024 * 1024;

const enum S {
  TopStart,
  TopKeyOrEnd,
  TopKey,
  TopColon,
  TopValueStart,
  TopValue,
  TopCommaOrEnd,
  TablesKeyOrEnd,
  TablesKey,
  TablesColon,
  TableValueStart,
  TableValue,
  TablesCommaOrEnd,
  ElemOrEnd,
  Elem,
  ElemCommaOrEnd,
  Done,
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const isSpace = (c: number): boolean => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

/** Where a value is gathered while its bytes arrive. */
class Capture {
  parts: Buffer[] = [];
  length = 0;
  depth = 0;
  inString = false;
  /** Backslashes right before the current position inside a string (an odd count escapes a quote). */
  slashes = 0;
  scalar = false;
  started = false;

  reset(): void {
    this.parts = [];
    this.length = 0;
    this.depth = 0;
    this.inString = false;
    this.slashes = 0;
    this.scalar = false;
    this.started = false;
  }
}

export class PayloadReader {
  private state = S.TopStart;
  private key: Capture = new Capture();
  private value: Capture = new Capture();
  private topKey = '';
  private tableName = '';
  private offset = 0;

  constructor(private readonly on: PayloadEvents) {}

  /** Reads a chunk; events for everything it completes are emitted before it returns. */
  push(buf: Buffer): void {
    let i = 0;
    const n = buf.length;
    while (i < n) {
      const state = this.state;
      if (state === S.TopKey || state === S.TablesKey) {
        const end = this.scan(this.key, buf, i);
        if (end < 0) return this.advance(n);
        i = end;
        const name = this.text(this.key, 'a key');
        this.key.reset();
        if (state === S.TopKey) {
          this.topKey = name;
          this.state = S.TopColon;
        } else {
          this.tableName = name;
          this.state = S.TablesColon;
        }
        continue;
      }
      if (state === S.TopValue || state === S.TableValue || state === S.Elem) {
        const end = this.scan(this.value, buf, i);
        if (end < 0) return this.advance(n);
        i = end;
        const bytes = this.bytes(this.value);
        this.value.reset();
        if (state === S.Elem && this.on.rowBytes?.(bytes)) {
          this.state = S.ElemCommaOrEnd;
          continue;
        }
        const value = this.parse(bytes);
        if (state === S.TopValue) {
          this.on.field(this.topKey, value);
          this.state = S.TopCommaOrEnd;
        } else if (state === S.TableValue) {
          this.on.tableValue(this.tableName, value);
          this.state = S.TablesCommaOrEnd;
        } else {
          this.on.row(value);
          this.state = S.ElemCommaOrEnd;
        }
        continue;
      }
      const c = buf[i]!;
      if (isSpace(c)) {
        i++;
        continue;
      }
      switch (state) {
        case S.TopStart:
          if (c !== 0x7b) this.unexpected(c, i, 'an object');
          this.state = S.TopKeyOrEnd;
          i++;
          break;
        case S.TopKeyOrEnd:
        case S.TablesKeyOrEnd:
          if (c === 0x7d) {
            this.state = state === S.TopKeyOrEnd ? S.Done : S.TopCommaOrEnd;
            i++;
          } else if (c === QUOTE) {
            this.state = state === S.TopKeyOrEnd ? S.TopKey : S.TablesKey;
          } else this.unexpected(c, i, 'a key');
          break;
        case S.TopColon:
        case S.TablesColon:
          if (c !== 0x3a) this.unexpected(c, i, '":"');
          this.state = state === S.TopColon ? S.TopValueStart : S.TableValueStart;
          i++;
          break;
        case S.TopValueStart:
          // `tables` as an object is walked into; any other value is gathered whole.
          if (this.topKey === 'tables' && c === 0x7b) {
            this.on.tablesStart();
            this.state = S.TablesKeyOrEnd;
            i++;
          } else this.state = S.TopValue;
          break;
        case S.TableValueStart:
          if (c === 0x5b) {
            this.on.tableStart(this.tableName);
            this.state = S.ElemOrEnd;
            i++;
          } else this.state = S.TableValue;
          break;
        case S.TopCommaOrEnd:
        case S.TablesCommaOrEnd:
          if (c === 0x2c) {
            this.state = state === S.TopCommaOrEnd ? S.TopKeyOrEnd : S.TablesKeyOrEnd;
            // A comma must be followed by a key, not a closing brace.
            i = this.requireKey(buf, i + 1);
          } else if (c === 0x7d) {
            this.state = state === S.TopCommaOrEnd ? S.Done : S.TopCommaOrEnd;
            i++;
          } else this.unexpected(c, i, '"," or "}"');
          break;
        case S.ElemOrEnd:
          if (c === 0x5d) {
            this.on.tableEnd(this.tableName);
            this.state = S.TablesCommaOrEnd;
            i++;
          } else this.state = S.Elem;
          break;
        case S.ElemCommaOrEnd:
          if (c === 0x2c) {
            this.state = S.Elem;
            i++;
            while (i < n && isSpace(buf[i]!)) i++;
            if (i < n && buf[i] === 0x5d) this.unexpected(0x5d, i, 'a value');
          } else if (c === 0x5d) {
            this.on.tableEnd(this.tableName);
            this.state = S.TablesCommaOrEnd;
            i++;
          } else this.unexpected(c, i, '"," or "]"');
          break;
        case S.Done:
          this.unexpected(c, i, 'the end of the text');
      }
    }
    this.advance(n);
  }

  /** The text has ended: it must have been one whole payload object. */
  end(): void {
    if (this.state !== S.Done) invalid('bad_json', 'the snapshot contents are not valid JSON (Unexpected end of JSON input)');
  }

  private advance(n: number): void {
    this.offset += n;
  }

  private requireKey(buf: Buffer, i: number): number {
    while (i < buf.length && isSpace(buf[i]!)) i++;
    if (i < buf.length && buf[i] !== QUOTE) this.unexpected(buf[i]!, i, 'a key');
    return i;
  }

  /**
   * Gathers a value (or a key: a string value) from buf[i]; returns the index after its
   * last byte, or -1 when it continues in the next chunk.
   */
  private scan(cap: Capture, buf: Buffer, i: number): number {
    const n = buf.length;
    if (!cap.started) {
      while (i < n && isSpace(buf[i]!)) i++;
      if (i >= n) return -1;
      cap.started = true;
      const c = buf[i]!;
      cap.scalar = c !== 0x7b && c !== 0x5b && c !== QUOTE;
    }
    const start = i;
    let end = -1;
    while (i < n) {
      if (cap.inString) {
        const q = buf.indexOf(QUOTE, i);
        if (q < 0) {
          let t = 0;
          for (let k = n - 1; k >= i && buf[k] === BACKSLASH; k--) t++;
          cap.slashes = t === n - i ? cap.slashes + t : t;
          i = n;
          break;
        }
        let t = 0;
        let k = q - 1;
        for (; k >= i && buf[k] === BACKSLASH; k--) t++;
        if (k < i) t += cap.slashes;
        cap.slashes = 0;
        i = q + 1;
        if (t % 2 === 1) continue;
        cap.inString = false;
        if (cap.depth === 0) {
          end = i;
          break;
        }
        continue;
      }
      const c = buf[i]!;
      if (cap.scalar) {
        if (c === 0x2c || c === 0x7d || c === 0x5d || isSpace(c)) {
          end = i;
          break;
        }
        i++;
        continue;
      }
      if (c === QUOTE) {
        cap.inString = true;
        cap.slashes = 0;
      } else if (c === 0x7b || c === 0x5b) cap.depth++;
      else if (c === 0x7d || c === 0x5d) {
        cap.depth--;
        if (cap.depth === 0) {
          end = i + 1;
          break;
        }
      }
      i++;
    }
    const stop = end < 0 ? n : end;
    if (stop > start) {
      cap.parts.push(buf.subarray(start, stop));
      cap.length += stop - start;
      if (cap.length > MAX_VALUE_BYTES) {
        invalid('too_large', `a value in the snapshot contents is larger than ${MAX_VALUE_BYTES} bytes; refused`);
      }
    }
    return end;
  }

  private bytes(cap: Capture): Buffer {
    return cap.parts.length === 1 ? cap.parts[0]! : Buffer.concat(cap.parts, cap.length);
  }

  private parse(bytes: Buffer): unknown {
    try {
      return JSON.parse(bytes.toString('utf8'));
    } catch (err) {
      return invalid('bad_json', `the snapshot contents are not valid JSON (${(err as Error).message})`);
    }
  }

  private text(cap: Capture, what: string): string {
    const value = this.parse(this.bytes(cap));
    if (typeof value !== 'string') invalid('bad_json', `the snapshot contents are not valid JSON (expected ${what})`);
    return value;
  }

  private unexpected(c: number, i: number, expected: string): never {
    return invalid(
      'bad_json',
      `the snapshot contents are not valid JSON (unexpected ${JSON.stringify(String.fromCharCode(c))} at byte ${this.offset + i}, expected ${expected})`,
    );
  }
}
