/**
 * Reading a snapshot file as a stream: decrypt -> gunzip -> incremental JSON -> upgrade ->
 * validate -> rows handed over in batches, with memory bounded by a few chunks and one
 * batch whatever the file's size (plus the keys a validation must remember, outside the
 * JS heap: validator.ts). The API's upload check runs it in a worker thread and keeps no
 * rows; the restore job runs it on its own loop and writes each batch into its open
 * transaction.
 *
 * Authentication. The container is one AES-256-GCM message (container.ts), whose tag is
 * checked once the last byte has been decrypted. Plaintext is therefore used before it is
 * authenticated, and everything built on it is provisional until the end:
 * - nothing commits before the tag checked: the restore writes inside one transaction and
 *   commits only after this function resolved, so a changed byte anywhere, a cut-off tail
 *   included, rolls every row back;
 * - a refusal caused by the contents (bad gzip, bad JSON, a bad row) is reported only after
 *   the rest of the file has been decrypted and the tag checked: an unauthentic file is
 *   refused as such (`auth_failed`: wrong password or modified), never with a reason its
 *   garbage happened to produce, as when the whole file was decrypted first;
 * - the parser, inflater and checks are the ones that refuse hostile uploads anyway, so
 *   unauthenticated input costs nothing they were not built for.
 *
 * Event loops: decryption runs in slices with a yield to the loop after each megabyte,
 * inflation on libuv's thread pool, parsing and checks a chunk (64 KiB of JSON) at a time.
 */
import { isUtf8 } from 'node:buffer';
import { once } from 'node:events';
import { createDecipheriv, type DecipherGCM } from 'node:crypto';
import { createGunzip } from 'node:zlib';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { assertDataKey, invalid, readContainer, readHeader, SNAPSHOT_FORMAT_VERSION, type SnapshotHeader } from './container.js';
import { PayloadReader, type PayloadEvents } from './json-stream.js';
import { describePayloadIssues, envelopeSchema, inflationCap, DEFAULT_INFLATION_LIMITS, fullPayloadSchema, type InflationLimits, type SnapshotEnvelope } from './payload.js';
import type { SnapshotRow, TableSpec } from './tables.js';
import { IGNORED_TABLES, upgradePlan, upgradeRow, type RowUpgrade, type UpgradePlan } from './upgrades.js';
import { SnapshotValidator, tablesMismatch } from './validator.js';

/** A whole file in memory, or its bytes as they come (a stored file's chunks, an upload). */
export type SnapshotSource = Buffer | AsyncIterable<Buffer>;

/** Where streamed rows go: the restore's writes, or nowhere (a check). */
export interface RowSink {
  /** Once the envelope is read and checked, before any row. */
  begin?(meta: SnapshotEnvelope, upgradedThrough: readonly string[]): Promise<void> | void;
  /** A batch of one table's rows, at the current schema; tables come parents first. */
  rows?(spec: TableSpec, rows: SnapshotRow[]): Promise<void> | void;
  /**
   * A batch of one table's rows as their JSON bytes (each one object, valid UTF-8), in
   * place of rows(), for a sink that writes them without JS objects: given only rows the
   * reader would hand over unchanged and unchecked (no validation, no upgrade step for
   * their table), so that what they become is what JSON.parse would make of them.
   */
  rowsJson?(spec: TableSpec, rows: Buffer[]): Promise<void> | void;
}

export interface StreamOptions {
  /** The business tables, parents first. */
  specs: readonly TableSpec[];
  /** Check every row (types, keys, domain rules, sealed columns); off for an upload the API checked. */
  validate: boolean;
  /** With `validate`: sealed columns must open with this key. */
  serverKey?: Buffer;
  limits?: InflationLimits;
  sink?: RowSink;
}

export interface StreamedSnapshot {
  /** The file's own envelope (schemaVersion is the file's, before upgrades). */
  meta: SnapshotEnvelope;
  /** Migrations whose upgrade steps were applied. */
  upgradedThrough: string[];
}

/** Rows per batch handed to a sink. */
const BATCH_ROWS = 2000;
/** Bytes read from a Buffer source at a time. */
const READ_BYTES = 256 * 1024;
/** Bytes decrypted between yields to the event loop. */
const YIELD_BYTES = 1024 * 1024;
/** The inflater's output chunks: the JSON handed to the parser at a time. */
const INFLATE_CHUNK = 64 * 1024;

async function* slices(buf: Buffer): AsyncGenerator<Buffer> {
  for (let at = 0; at < buf.length; at += READ_BYTES) yield buf.subarray(at, at + READ_BYTES);
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;

/**
 * Streams a file through every check and hands its rows to `opts.sink`. Resolves only once
 * the whole file was read, its tag checked and every row handed over; every refusal is a
 * SnapshotInvalidError (errors of the sink pass through).
 */
export async function streamSnapshot(source: SnapshotSource, key: Buffer, opts: StreamOptions): Promise<StreamedSnapshot> {
  assertDataKey(key);
  const consumer = new PayloadConsumer(opts);
  const reader = new PayloadReader(consumer);
  await decryptAndInflate(source, key, opts.limits ?? DEFAULT_INFLATION_LIMITS, async (json) => {
    reader.push(json);
    await consumer.flush();
  });
  reader.end();
  consumer.end();
  await consumer.flush();
  return consumer.result();
}

/**
 * Decrypts and inflates `source`, handing each piece of inflated text to `onText` (awaited:
 * backpressure all the way to the file). Resolves after the GCM tag checked; see the top of
 * this module for the order of refusals.
 */
async function decryptAndInflate(source: SnapshotSource, key: Buffer, limits: InflationLimits, onText: (text: Buffer) => Promise<void>): Promise<void> {
  let cap = Number.POSITIVE_INFINITY;
  let compressed = 0;
  const gunzip = createGunzip({ chunkSize: INFLATE_CHUNK });
  // Errors reach the consumer through its iteration; this keeps a late one from being unhandled.
  gunzip.on('error', () => undefined);
  let stop = false;
  let stopped!: () => void;
  const stoppedSignal = new Promise<void>((resolve) => (stopped = resolve));

  const consume = (async () => {
    let inflated = 0;
    try {
      for await (const text of gunzip as AsyncIterable<Buffer>) {
        inflated += text.length;
        if (inflated > cap) {
          invalid('too_large', `the snapshot contents inflate beyond ${cap} bytes (from ${compressed} compressed); refused as a possible zip bomb`);
        }
        await onText(text);
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (typeof code === 'string' && code.startsWith('Z_')) invalid('bad_compression', `the snapshot contents are not valid gzip (${(err as Error).message})`);
      throw err;
    } finally {
      stop = true;
      stopped();
    }
  })();

  const produce = (async () => {
    try {
      let header: SnapshotHeader | undefined;
      let chunks: AsyncIterable<Buffer>;
      let probe: Buffer[] = [];
      let probed = 0;
      if (Buffer.isBuffer(source)) {
        header = readContainer(source);
        chunks = slices(source.subarray(header.headerLength));
      } else {
        chunks = source;
      }
      let decipher: DecipherGCM | undefined;
      let cipherLeft = 0;
      const tag: Buffer[] = [];
      let tagLength = 0;
      let total = header?.headerLength ?? 0;
      let sinceYield = 0;

      const start = (h: SnapshotHeader, headerBytes: Buffer) => {
        decipher = createDecipheriv('aes-256-gcm', key, h.iv, { authTagLength: 16 });
        decipher.setAAD(headerBytes);
        cipherLeft = h.ciphertextLength;
        compressed = h.ciphertextLength;
        cap = inflationCap(compressed, limits);
      };
      if (header && Buffer.isBuffer(source)) start(header, source.subarray(0, header.headerLength));

      const take = async (bytes: Buffer): Promise<void> => {
        let at = 0;
        if (cipherLeft > 0) {
          const n = Math.min(cipherLeft, bytes.length);
          cipherLeft -= n;
          at = n;
          const plain = decipher!.update(bytes.subarray(0, n));
          sinceYield += n;
          if (!stop && plain.length > 0 && !gunzip.write(plain) && !stop) {
            await Promise.race([once(gunzip, 'drain').catch(() => undefined), stoppedSignal]);
            sinceYield = 0;
          }
        }
        if (at < bytes.length) {
          const rest = bytes.subarray(at);
          if (tagLength + rest.length > 16) {
            const extra = total - (header!.totalLength);
            invalid('trailing_data', `file has ${extra} unexpected byte${extra === 1 ? '' : 's'} after the end of the snapshot (modified or concatenated?)`);
          }
          tag.push(rest);
          tagLength += rest.length;
        }
        if (sinceYield >= YIELD_BYTES) {
          sinceYield = 0;
          await yieldToLoop();
        }
      };

      for await (const chunk of chunks) {
        total += chunk.length;
        if (!header) {
          probe.push(chunk);
          probed += chunk.length;
          if (probed < 128) continue;
          const head = Buffer.concat(probe);
          probe = [];
          header = readHeader(head);
          start(header, head.subarray(0, header.headerLength));
          if (head.length > header.headerLength) await take(head.subarray(header.headerLength));
          continue;
        }
        await take(chunk);
      }
      if (!header) {
        // A file shorter than the probe: the header reader says what is wrong with it.
        const head = Buffer.concat(probe);
        header = readContainer(head);
        start(header, head.subarray(0, header.headerLength));
        if (head.length > header.headerLength) await take(head.subarray(header.headerLength));
      }
      if (total < header.totalLength) {
        invalid('truncated', `file is truncated: the snapshot needs ${header.totalLength} bytes, the file has ${total}`);
      }
      decipher!.setAuthTag(Buffer.concat(tag));
      let last: Buffer;
      try {
        last = decipher!.final();
      } catch {
        // GCM gives one bit: a wrong key and a changed byte fail identically. Say both.
        invalid(
          'auth_failed',
          'cannot decrypt the snapshot: wrong password or the file was modified ' +
            '(AES-GCM cannot tell these apart; check the password that was set when the snapshot was exported)',
        );
      }
      if (!stop && last.length > 0) gunzip.write(last);
      if (!stop) gunzip.end();
    } catch (err) {
      gunzip.destroy(err as Error);
      throw err;
    }
  })();

  const [produced, consumed] = await Promise.allSettled([produce, consume]);
  if (produced.status === 'rejected') throw produced.reason;
  if (consumed.status === 'rejected') throw consumed.reason;
}

interface CurrentTable {
  name: string;
  spec: TableSpec | undefined;
  steps: readonly RowUpgrade[] | undefined;
  index: number;
}

/** The payload's logic over the reader's events: envelope, table order, upgrades, checks, batches. */
class PayloadConsumer implements PayloadEvents {
  private readonly fields: Record<string, unknown> = {};
  private meta: SnapshotEnvelope | undefined;
  private plan: UpgradePlan | undefined;
  private beginPending = false;
  private readonly specIndex: Map<string, number>;
  private lastSpec = -1;
  private current: CurrentTable | undefined;
  private readonly seen = new Map<string, number>();
  private readonly unknown: string[] = [];
  private batch: SnapshotRow[] = [];
  /** Rows as their bytes (RowSink.rowsJson): a table's rows go one way or the other, batch by batch, in order. */
  private jsonBatch: Buffer[] = [];
  private ready: ({ spec: TableSpec; rows: SnapshotRow[] } | { spec: TableSpec; json: Buffer[] })[] = [];
  private readonly validator: SnapshotValidator | undefined;
  private ended = false;

  constructor(private readonly opts: StreamOptions) {
    this.specIndex = new Map(opts.specs.map((s, i) => [s.table, i]));
    this.validator = opts.validate ? new SnapshotValidator(opts.specs, opts.serverKey) : undefined;
  }

  field(name: string, value: unknown): void {
    if (name === 'tables') this.refuseTables(value);
    this.fields[name] = value;
  }

  tablesStart(): void {
    const checked = envelopeSchema.safeParse(this.fields);
    if (!checked.success) invalid('bad_payload', describePayloadIssues(checked.error));
    if (checked.data.formatVersion !== SNAPSHOT_FORMAT_VERSION) {
      invalid('bad_payload', `invalid snapshot payload: contents say format version ${checked.data.formatVersion}, header says ${SNAPSHOT_FORMAT_VERSION}`);
    }
    this.meta = checked.data;
    this.plan = upgradePlan(checked.data.schemaVersion);
    this.beginPending = true;
  }

  tableStart(name: string): void {
    if (this.seen.has(name)) invalid('bad_payload', `invalid snapshot payload: tables.${name} appears twice`);
    this.seen.set(name, 0);
    const at = this.specIndex.get(name);
    let spec: TableSpec | undefined;
    if (at !== undefined && !IGNORED_TABLES.includes(name)) {
      if (at < this.lastSpec) {
        invalid(
          'bad_payload',
          `invalid snapshot payload: table ${name} comes after ${this.opts.specs[this.lastSpec]!.table}; a snapshot lists its tables parents first (${this.opts.specs.map((s) => s.table).join(', ')})`,
        );
      }
      this.lastSpec = at;
      spec = this.opts.specs[at];
    } else if (!IGNORED_TABLES.includes(name)) {
      this.unknown.push(name);
    }
    this.current = { name, spec, steps: this.plan!.rowSteps.get(name), index: 0 };
  }

  /**
   * Rows that would go to the sink unchanged and unchecked go as their bytes when the sink
   * takes them so. An object's bytes start with its brace (the reader's capture starts at
   * the value); bytes that are not valid UTF-8 are parsed as before, which reads them with
   * replacement characters.
   */
  rowBytes(bytes: Buffer): boolean {
    const t = this.current!;
    if (!t.spec || this.validator || !this.opts.sink?.rowsJson || (t.steps !== undefined && t.steps.length > 0)) return false;
    if (bytes[0] !== 0x7b || !isUtf8(bytes)) return false;
    t.index++;
    if (this.batch.length > 0) this.cut(t.spec);
    this.jsonBatch.push(bytes);
    if (this.jsonBatch.length >= BATCH_ROWS) this.cutJson(t.spec);
    return true;
  }

  row(value: unknown): void {
    const t = this.current!;
    const index = t.index++;
    if (!t.spec) return;
    if (this.jsonBatch.length > 0) this.cutJson(t.spec);
    if (!isPlainObject(value)) invalid('bad_payload', `invalid snapshot payload: tables.${t.name}.${index}: expected an object, got ${Array.isArray(value) ? 'an array' : value === null ? 'null' : typeof value}`);
    const row = upgradeRow(t.steps, value);
    const v = this.validator;
    if (v) {
      const ok = v.row(t.name, index, row);
      if (v.full) v.finish();
      if (!ok || !v.clean) return;
    }
    this.batch.push(row);
    if (this.batch.length >= BATCH_ROWS) this.cut(t.spec);
  }

  tableEnd(name: string): void {
    const t = this.current!;
    this.seen.set(name, t.index);
    if (t.spec) {
      this.cutJson(t.spec);
      this.cut(t.spec);
    }
    this.current = undefined;
  }

  tableValue(name: string, value: unknown): void {
    invalid('bad_payload', `invalid snapshot payload: tables.${name}: expected an array of rows, got ${value === null ? 'null' : typeof value}`);
  }

  private refuseTables(value: unknown): never {
    // `tables` that is not an object: the schema says what is wrong.
    const checked = fullPayloadSchema.safeParse({ ...this.fields, tables: value });
    return invalid('bad_payload', checked.success ? 'invalid snapshot payload: tables: expected an object' : describePayloadIssues(checked.error));
  }

  private cutJson(spec: TableSpec): void {
    if (this.jsonBatch.length === 0) return;
    this.ready.push({ spec, json: this.jsonBatch });
    this.jsonBatch = [];
  }

  private cut(spec: TableSpec): void {
    if (this.batch.length === 0) return;
    this.ready.push({ spec, rows: this.batch });
    this.batch = [];
  }

  /** Hands what is ready to the sink (awaited by the reader between chunks). */
  async flush(): Promise<void> {
    const sink = this.opts.sink;
    if (this.beginPending) {
      this.beginPending = false;
      await sink?.begin?.(this.meta!, this.plan!.applied);
    }
    const ready = this.ready;
    this.ready = [];
    for (const r of ready) await ('json' in r ? sink?.rowsJson?.(r.spec, r.json) : sink?.rows?.(r.spec, r.rows));
  }

  /** The text ended: the whole-file checks, in the order a whole-file read made them. */
  end(): void {
    this.ended = true;
    if (!this.meta) this.refuseTables(this.fields.tables);
    const counts = this.meta.counts;
    const names = new Set([...Object.keys(counts), ...this.seen.keys()]);
    const wrong: string[] = [];
    for (const name of names) {
      const rows = this.seen.get(name);
      if (rows !== counts[name]) wrong.push(`counts.${name}: count ${counts[name] ?? '(missing)'} does not match ${rows ?? 'no'} rows in tables.${name}`);
    }
    if (wrong.length > 0) invalid('bad_payload', `invalid snapshot payload: ${wrong.slice(0, 5).join('; ')}`);
    if (!this.validator) return;
    // Part of the checks, like the rows': an upload the API checked against this schema
    // has this meshq's tables.
    const missing = this.opts.specs.filter((s) => !this.seen.has(s.table)).map((s) => s.table);
    if (this.unknown.length > 0 || missing.length > 0) throw tablesMismatch(this.unknown, missing);
    this.validator.finish();
  }

  result(): StreamedSnapshot {
    if (!this.ended || !this.meta) throw new Error('snapshot reader: the file was not read to its end');
    return { meta: this.meta, upgradedThrough: this.plan!.applied };
  }
}

