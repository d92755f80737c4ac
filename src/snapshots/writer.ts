/**
 * Writing a snapshot file: JSON text handed over table by table, compressed while it is
 * produced into a temporary file, then encrypted into the container (container.ts) as the
 * file is stored.
 */
import { promisify } from 'node:util';
import { gzip, gzipSync } from 'node:zlib';
import type { KdfParamsWithSalt } from '../crypto.js';
import { assertDataKey, encryptSnapshotBody, encryptSnapshotStream, snapshotFileLength, SNAPSHOT_FORMAT_VERSION } from './container.js';
import { SpoolFile } from './spool.js';
import { checkWritable, describePayloadIssues, envelopeSchema, type SnapshotEnvelope, type SnapshotPayload } from './payload.js';

/** zlib level for exports (see SnapshotWriter). */
const GZIP_LEVEL = 2;
/** JSON text per gzip member of an export: large enough that members cost nothing, small enough to overlap. */
const GZIP_PIECE_BYTES = 4 * 1024 * 1024;
/**
 * zlib's output buffer per member. Its default (16 KiB) makes each member hop between the
 * thread pool and the main thread once per 16 KiB of output, which the main thread pays
 * for on every export.
 */
const GZIP_CHUNK_BYTES = 256 * 1024;
const gzipAsync = promisify(gzip);
/** Size of the buffers buffer() lends: a gzip piece and the part that crossed its line. */
const LENT_BYTES = GZIP_PIECE_BYTES + GZIP_PIECE_BYTES / 4;
/**
 * Buffers kept for reuse: one member finishes for each piece started, so a couple serve;
 * more would only add to the export's peak memory.
 */
const FREE_BUFFERS = 2;

/** What a SnapshotWriter is given: the counts may be left to what it writes. */
export type SnapshotWriterEnvelope = Omit<SnapshotEnvelope, 'counts'> & { counts?: Record<string, number> };

/** gzip members compressing at once; past this, the writer waits (bounds the text held in memory). */
const MAX_MEMBERS_IN_FLIGHT = 4;

/** A written file, ready to be stored: its size, and its bytes, to be read once. */
export interface WrittenSnapshot {
  readonly size: number;
  /** Header, ciphertext, tag, encrypted as they are read; the temporary file goes once they were read. */
  readonly bytes: AsyncIterable<Buffer>;
}

/**
 * Writes a file from JSON text handed over table by table: the export's way, where the
 * rows' JSON is written by the database (SQLite) or converted from COPY's bytes
 * (PostgreSQL; src/repositories/snapshots.ts) and the rows never become JS
 * objects.
 *
 * The text is gathered into pieces of about GZIP_PIECE_BYTES, and each piece is
 * compressed on libuv's thread pool as its own gzip member while the next piece is being
 * produced. A gzip file is by definition a series of members whose contents concatenate
 * (RFC 1952, 2.2), so this is the same gzip(JSON) any gunzip reads, format version 1
 * unchanged; each member adds only a gzip header and trailer. Level GZIP_LEVEL: deflate's
 * fast levels (1-3) take far less time than the default 6 for slightly larger files (the
 * rows are mostly random keys and hashes, which no level compresses), and of those, 2
 * searches shorter match chains than 3 (about two thirds of its CPU on export text, for
 * a file under 1% larger; docs/benchmarks.md) while compressing a little better than 1.
 * Nothing ever holds the whole JSON text.
 *
 * Compressed members go, in order, into a temporary file (SpoolFile, encrypted under a
 * key of its own that only this process holds) as they are done, not into memory: the
 * container's header states the ciphertext's length and is authenticated before the
 * first encrypted byte (container.ts), so the body must be complete before encryption
 * starts. finish() then hands out the file's bytes encrypted as they are read from that
 * file, and a caller that stops before the end (or never calls finish) calls discard().
 * Memory is a few members, whatever the export's size.
 *
 * The writer checks the envelope and that every table of `counts` is written with exactly
 * that many rows, in any case; the rows themselves are trusted to be JSON objects in the
 * snapshot's form (the callers: JSON.stringify of checked rows, and the repository's
 * SQL and COPY conversion, which the snapshot-export tests hold to the same output).
 */
export class SnapshotWriter {
  private readonly members: (Promise<Buffer> | undefined)[] = [];
  /** Leading members already in the spool file. */
  private settled = 0;
  private spool: Promise<SpoolFile> | undefined;
  /** Appends to the spool file, one after the other. */
  private draining: Promise<void> = Promise.resolve();
  private pending: (string | Buffer)[] = [];
  private pendingLength = 0;
  private readonly written = new Map<string, number>();
  /** Buffers lent by buffer() and not back yet, by their memory; and those back, for reuse. */
  private readonly lent = new Map<ArrayBufferLike, Buffer>();
  private readonly free: Buffer[] = [];
  private current: string | undefined;
  private finished = false;

  /**
   * Without `counts` in the envelope, the file states the rows written (an export reads
   * one consistent snapshot, so what it wrote is what there was, and counting the tables
   * first would be a second pass over every table). With them, every table must match.
   */
  constructor(
    readonly envelope: SnapshotWriterEnvelope,
    private readonly key: Buffer,
    private readonly kdf: KdfParamsWithSalt,
  ) {
    assertDataKey(key);
    if (envelope.formatVersion !== SNAPSHOT_FORMAT_VERSION) {
      throw new Error(`payload formatVersion ${envelope.formatVersion} is not ${SNAPSHOT_FORMAT_VERSION}`);
    }
    const checked = (envelope.counts === undefined ? envelopeSchema.omit({ counts: true }) : envelopeSchema).safeParse(envelope);
    if (!checked.success) throw new Error(describePayloadIssues(checked.error));
  }

  /** Rows written per table: the file's counts. */
  get counts(): Record<string, number> {
    return Object.fromEntries(this.written);
  }

  /** Starts the next table; its rows follow through rows(). */
  table(name: string): void {
    if (this.finished) throw new Error('snapshot writer: already finished');
    if (this.written.has(name)) throw new Error(`snapshot writer: table ${name} written twice`);
    if (this.envelope.counts && !Object.hasOwn(this.envelope.counts, name)) throw new Error(`snapshot writer: table ${name} is not in counts`);
    this.push(`${this.current === undefined ? '' : '],'}${JSON.stringify(name)}:[`);
    this.current = name;
    this.written.set(name, 0);
  }

  /**
   * `count` rows of the current table as JSON objects joined by commas (no brackets).
   * Resolves once there is room for more: await it to keep memory bounded.
   */
  rows(text: string, count: number): Promise<void> | undefined {
    const table = this.current;
    if (table === undefined || this.finished) throw new Error('snapshot writer: rows outside a table');
    if (count === 0) return undefined;
    const before = this.written.get(table)!;
    this.push(before === 0 ? text : `,${text}`);
    return this.wrote(table, before + count);
  }

  /**
   * `count` rows of the current table as UTF-8 JSON bytes that continue what was written
   * of it so far: objects joined by commas, with a comma before the first one too when
   * rows came before (src/snapshots/pg-copy-text.ts writes them so). A piece as large as
   * a gzip member is compressed as it is, without a copy.
   */
  rowBytes(bytes: Buffer, count: number): Promise<void> | undefined {
    const table = this.current;
    if (table === undefined || this.finished) throw new Error('snapshot writer: rows outside a table');
    if (count === 0) return undefined;
    const before = this.written.get(table)!;
    if ((bytes[0] === 0x2c) !== before > 0) throw new Error(`snapshot writer: rows of ${table} must start with a comma exactly when rows came before`);
    this.push(bytes);
    return this.wrote(table, before + count);
  }

  /**
   * A buffer of at least `bytes` for rowBytes' bytes (src/snapshots/pg-copy-text.ts writes
   * its pieces in these). The writer takes it back once the member compressed from it is
   * done, and lends it again: a new buffer of megabytes per piece was memory outside the
   * JS heap that V8 answered with a full garbage collection every few pieces.
   */
  buffer(bytes: number): Buffer {
    const i = this.free.findIndex((b) => b.length >= bytes);
    // One size for the usual requests (a converter's piece, a piece joined from parts),
    // so that any buffer taken back serves the next.
    const buf = i < 0 ? Buffer.allocUnsafe(Math.max(bytes, LENT_BYTES)) : this.free.splice(i, 1)[0]!;
    this.lent.set(buf.buffer, buf);
    return buf;
  }

  /**
   * Parts (SQLite's blobs of rows, table openings) as one piece, written into a lent
   * buffer rather than a new one per piece (see buffer()).
   */
  private joined(parts: readonly (string | Buffer)[]): Buffer {
    let bytes = 0;
    for (const p of parts) bytes += typeof p === 'string' ? Buffer.byteLength(p, 'utf8') : p.length;
    const buf = this.buffer(bytes);
    let at = 0;
    for (const p of parts) at += typeof p === 'string' ? buf.write(p, at, 'utf8') : p.copy(buf, at);
    return buf.subarray(0, at);
  }

  /** Takes back the buffer `bytes` were written in, if buffer() lent it. */
  private giveBack(bytes: string | Buffer): void {
    if (typeof bytes === 'string') return;
    const buf = this.lent.get(bytes.buffer);
    if (!buf) return;
    this.lent.delete(bytes.buffer);
    if (this.free.length < FREE_BUFFERS && !this.finished) this.free.push(buf);
  }

  private wrote(table: string, rows: number): Promise<void> | undefined {
    this.written.set(table, rows);
    const waiting = this.members.length - this.settled;
    return waiting > MAX_MEMBERS_IN_FLIGHT ? this.drain(MAX_MEMBERS_IN_FLIGHT) : undefined;
  }

  /** Moves finished members, in order, into the spool file until at most `left` are pending. */
  private drain(left: number): Promise<void> {
    const next = this.draining.then(async () => {
      while (this.members.length - this.settled > left) {
        const piece = await this.members[this.settled]!;
        this.members[this.settled] = undefined;
        this.settled++;
        this.spool ??= SpoolFile.create('meshq-export-', { sealed: true });
        await (await this.spool).append(piece);
      }
    });
    this.draining = next.catch(() => undefined);
    return next;
  }

  /** Removes the temporary file; for a writer given up on before its bytes were read. Safe to call again. */
  async discard(): Promise<void> {
    this.finished = true;
    this.members.length = 0;
    await this.draining;
    const spool = this.spool;
    if (spool) await (await spool.catch(() => undefined))?.remove();
  }

  /**
   * The file: checks that every table was written whole (where counts were given),
   * compresses the rest into the spool file, and returns the file's size and its bytes,
   * encrypted as they are read. The envelope, counts included, is the first gzip member,
   * compressed last.
   */
  async finish(): Promise<WrittenSnapshot> {
    if (this.finished) throw new Error('snapshot writer: already finished');
    const declared = this.envelope.counts;
    if (declared) {
      const wrong = Object.keys(declared)
        .filter((t) => this.written.get(t) !== declared[t])
        .map((t) => `${t}: count ${declared[t]}, written ${this.written.get(t) ?? 'no'} rows`);
      if (wrong.length > 0) throw new Error(`snapshot writer: rows do not match the counts (${wrong.join('; ')})`);
    }
    this.push(`${this.current === undefined ? '' : ']'}}}`, true);
    this.finished = true;
    await this.drain(0);
    this.free.length = 0;
    // Same text as JSON.stringify(payload): the envelope's fields, then "tables" last.
    const { formatVersion, schemaVersion, appVersion, createdAt } = this.envelope;
    const head = JSON.stringify({ formatVersion, schemaVersion, appVersion, createdAt, counts: declared ?? this.counts, tables: {} }).slice(0, -2);
    const headMember = await gzipAsync(head, { level: GZIP_LEVEL });
    const spool = await this.spool!;
    const bodyLength = headMember.length + spool.size;
    async function* body(): AsyncGenerator<Buffer> {
      yield headMember;
      yield* spool.read();
    }
    const key = this.key;
    const kdf = this.kdf;
    async function* bytes(): AsyncGenerator<Buffer> {
      try {
        yield* encryptSnapshotStream(bodyLength, body(), key, kdf);
      } finally {
        await spool.remove();
      }
    }
    return { size: snapshotFileLength(bodyLength), bytes: bytes() };
  }

  private push(text: string | Buffer, force = false): void {
    if (text.length > 0) {
      this.pending.push(text);
      this.pendingLength += text.length;
    }
    if (this.pendingLength >= GZIP_PIECE_BYTES || (force && this.pendingLength > 0)) {
      const pending = this.pending;
      const single = pending.length === 1 && Buffer.isBuffer(pending[0]);
      const piece = single
        ? (pending[0] as Buffer)
        : pending.every((p) => typeof p === 'string')
          ? Buffer.from(pending.join(''), 'utf8')
          : this.joined(pending);
      const member = gzipAsync(piece, { level: GZIP_LEVEL, chunkSize: GZIP_CHUNK_BYTES });
      // A lent buffer is reused once nothing reads it any more: the piece's after its
      // member, the parts copied into it at once.
      if (!single) for (const p of pending) this.giveBack(p);
      void member.then(() => this.giveBack(piece), () => undefined);
      // Awaited by drain() or finish(); a writer abandoned half-way must not leave an
      // unhandled rejection behind.
      member.catch(() => undefined);
      this.members.push(member);
      this.pending = [];
      this.pendingLength = 0;
    }
  }
}

/** The file for a payload. `key` is the 32-byte key derived with `kdf` (see crypto.ts). */
export function encodeSnapshot(payload: SnapshotPayload, key: Buffer, kdf: KdfParamsWithSalt): Buffer {
  checkWritable(payload);
  const body = gzipSync(Buffer.from(JSON.stringify(payload), 'utf8'), { level: GZIP_LEVEL });
  return encryptSnapshotBody(body, key, kdf);
}

