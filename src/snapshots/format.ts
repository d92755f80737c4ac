/**
 * The snapshot file: a small binary header, then AES-256-GCM over gzip(JSON).
 *
 *   offset  size  field
 *        0     8  magic "MESHQSNP"
 *        8     2  format version (u16 BE), currently 1
 *       10     1  KDF id (1 = scrypt)
 *       11     2  length of the KDF parameter block (u16 BE), so a reader can skip or
 *                 reject a KDF it does not know by name rather than misparse it
 *       13     n  KDF parameters (scrypt: N, r, p as u32 BE, n = 12)
 *     13+n    16  salt
 *     29+n    12  IV
 *     41+n     8  ciphertext length (u64 BE)
 *     49+n     …  ciphertext, then the 16-byte GCM tag
 *
 * The whole header is GCM additional data: a changed KDF parameter, salt or length is an
 * authentication failure, not a silently different key. The explicit ciphertext length
 * lets a cut-off file be reported as truncated (and appended bytes as such) before any
 * decryption, instead of as the vaguer "wrong password or modified".
 *
 * Everything is in memory and synchronous: the API must validate an upload fully before
 * staging it, and files are bounded by the upload limit and `maxDecompressedBytes`.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { gunzipSync, gzip, gzipSync } from 'node:zlib';
import { z } from 'zod';
import { checkKdfParams, deriveKey, KEY_LENGTH, SALT_LENGTH } from '../crypto.js';
import type { KdfParamsWithSalt } from '../crypto.js';
import { SnapshotInvalidError } from './errors.js';
import type { SnapshotInvalidReason } from './errors.js';

export const SNAPSHOT_MAGIC = Buffer.from('MESHQSNP', 'ascii');
export const SNAPSHOT_FORMAT_VERSION = 1;
/** Default zip-bomb guard for decoding. */
export const DEFAULT_MAX_DECOMPRESSED_BYTES = 1024 ** 3;

/** zlib level for exports (see encodeSnapshotAsync). */
const GZIP_LEVEL = 3;
/** JSON text per gzip member of an export: large enough that members cost nothing, small enough to overlap. */
const GZIP_PIECE_BYTES = 4 * 1024 * 1024;
/**
 * zlib's output buffer per member. Its default (16 KiB) makes each member hop between the
 * thread pool and the main thread once per 16 KiB of output; those hops cost the main
 * thread ~0.1 s per export of the benchmark's rows.
 */
const GZIP_CHUNK_BYTES = 256 * 1024;
/** Rows per JSON.stringify call while writing an export. */
const STRINGIFY_ROWS = 2000;
const gzipAsync = promisify(gzip);

const KDF_SCRYPT = 1;
const SCRYPT_PARAMS_LENGTH = 12;
const IV_LENGTH = 12;
const TAG_LENGTH = 16;
const LENGTH_FIELD = 8;
/** Bytes before the KDF parameter block: magic, version, KDF id, parameter length. */
const FIXED_PREFIX = SNAPSHOT_MAGIC.length + 2 + 1 + 2;

export interface SnapshotPayload {
  formatVersion: number;
  schemaVersion: string;
  appVersion: string;
  /** ISO 8601 */
  createdAt: string;
  counts: Record<string, number>;
  tables: Record<string, Record<string, unknown>[]>;
}

export interface SnapshotHeader {
  formatVersion: number;
  kdf: KdfParamsWithSalt & { readonly algorithm: 'scrypt' };
  iv: Buffer;
  /** Bytes of header (the GCM additional data). */
  headerLength: number;
  ciphertextLength: number;
  /** What the whole file must measure: header + ciphertext + tag. */
  totalLength: number;
}

export interface DecodeOptions {
  /** Refuse files whose gzip body inflates beyond this; default 1 GiB. */
  maxDecompressedBytes?: number;
}

/**
 * The payload's envelope. `tables` is checked one of two ways: the full schema (every row
 * a JSON object, with zod's messages naming the bad ones) only when the quick scan below
 * finds a row that is not a plain object; otherwise a schema that takes the row arrays as
 * they are. zod copies every array and row it checks: on 250,000 rows that was half a
 * second, twice per restore, spent to learn that the rows are objects.
 */
const envelopeShape = {
  formatVersion: z.number().int().positive(),
  schemaVersion: z.string().min(1),
  appVersion: z.string().min(1),
  createdAt: z.iso.datetime({ offset: true }),
  counts: z.record(z.string(), z.number().int().nonnegative()),
};
const envelopeSchema = z.object(envelopeShape);

const payloadSchema = (tables: z.ZodType<Record<string, Record<string, unknown>[]>>) =>
  z
    .object({ ...envelopeShape, tables })
    .superRefine((p, ctx) => {
      // Counts are what an operator reads before restoring; a file whose counts lie about its
      // rows was not written by a correct meshq.
      const names = new Set([...Object.keys(p.counts), ...Object.keys(p.tables)]);
      for (const name of names) {
        const rows = p.tables[name]?.length;
        const count = p.counts[name];
        if (rows !== count) {
          ctx.addIssue({
            code: 'custom',
            path: ['counts', name],
            message: `count ${count ?? '(missing)'} does not match ${rows ?? 'no'} rows in tables.${name}`,
          });
        }
      }
    });

const fullPayloadSchema = payloadSchema(z.record(z.string(), z.array(z.record(z.string(), z.unknown()))));
const scannedPayloadSchema = payloadSchema(
  z.record(
    z.string(),
    z.custom<Record<string, unknown>[]>((v) => Array.isArray(v)),
  ),
);

const isPlainObject = (v: unknown): boolean => {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  return Object.getPrototypeOf(v) === Object.prototype;
};

/** True when `tables` is an object of arrays of plain objects: what the full schema accepts. */
function rowsAreObjects(value: unknown): boolean {
  if (!isPlainObject(value)) return false;
  const tables = (value as { tables?: unknown }).tables;
  if (!isPlainObject(tables)) return false;
  for (const rows of Object.values(tables as object)) {
    if (!Array.isArray(rows)) return false;
    for (const row of rows as unknown[]) if (!isPlainObject(row)) return false;
  }
  return true;
}

function parsePayload(value: unknown) {
  return (rowsAreObjects(value) ? scannedPayloadSchema : fullPayloadSchema).safeParse(value);
}

/** Where the contents are wrong, first few places only: a bad file can have a million bad rows. */
function describeIssues(error: z.ZodError): string {
  const shown = error.issues.slice(0, 5).map((i) => `${i.path.length > 0 ? i.path.join('.') : '(root)'}: ${i.message}`);
  const more = error.issues.length - shown.length;
  return `invalid snapshot payload: ${shown.join('; ')}${more > 0 ? `; and ${more} more` : ''}`;
}

function invalid(reason: SnapshotInvalidReason, message: string): never {
  throw new SnapshotInvalidError(reason, message);
}

function assertDataKey(key: Buffer): void {
  if (key.length !== KEY_LENGTH) throw new Error(`the snapshot key must be ${KEY_LENGTH} bytes (got ${key.length})`);
}

function truncated(have: number, need: number, what: string): never {
  if (have === 0) invalid('truncated', 'file is truncated: it is empty');
  return invalid('truncated', `file is truncated: ${what} needs ${need} bytes, the file has ${have}`);
}

/**
 * Parses and checks the header only (not the body's length): enough to learn the KDF
 * parameters before deriving the key from a password.
 */
export function readHeader(buf: Buffer): SnapshotHeader {
  const magicPart = buf.subarray(0, SNAPSHOT_MAGIC.length);
  if (!magicPart.equals(SNAPSHOT_MAGIC.subarray(0, magicPart.length))) {
    invalid('not_snapshot', 'not a meshq snapshot: the file does not start with "MESHQSNP"');
  }
  if (buf.length < SNAPSHOT_MAGIC.length + 2) truncated(buf.length, SNAPSHOT_MAGIC.length + 2, 'the header');

  const formatVersion = buf.readUInt16BE(SNAPSHOT_MAGIC.length);
  if (formatVersion > SNAPSHOT_FORMAT_VERSION) {
    invalid(
      'unsupported_version',
      `format version ${formatVersion} is newer than this meshq understands (${SNAPSHOT_FORMAT_VERSION}); ` +
        'restore it with a newer meshq',
    );
  }
  if (formatVersion !== SNAPSHOT_FORMAT_VERSION) {
    invalid('unsupported_version', `format version ${formatVersion} is not a valid snapshot format version`);
  }

  if (buf.length < FIXED_PREFIX) truncated(buf.length, FIXED_PREFIX, 'the header');
  const kdfId = buf.readUInt8(SNAPSHOT_MAGIC.length + 2);
  const kdfLength = buf.readUInt16BE(SNAPSHOT_MAGIC.length + 3);
  if (kdfId !== KDF_SCRYPT) {
    invalid('unsupported_kdf', `unknown key-derivation function id ${kdfId}: the file is damaged or from a newer meshq`);
  }
  if (kdfLength !== SCRYPT_PARAMS_LENGTH) {
    invalid('bad_header', `malformed header: scrypt parameters take ${SCRYPT_PARAMS_LENGTH} bytes, header says ${kdfLength}`);
  }

  const saltAt = FIXED_PREFIX + kdfLength;
  const ivAt = saltAt + SALT_LENGTH;
  const lengthAt = ivAt + IV_LENGTH;
  const headerLength = lengthAt + LENGTH_FIELD;
  if (buf.length < headerLength) truncated(buf.length, headerLength, 'the header');

  const N = buf.readUInt32BE(FIXED_PREFIX);
  const r = buf.readUInt32BE(FIXED_PREFIX + 4);
  const p = buf.readUInt32BE(FIXED_PREFIX + 8);
  const problem = checkKdfParams({ N, r, p });
  if (problem) invalid('bad_header', `malformed header: ${problem}; the file is damaged or was not made by meshq`);

  const ciphertextLength = buf.readBigUInt64BE(lengthAt);
  if (ciphertextLength > BigInt(Number.MAX_SAFE_INTEGER - headerLength - TAG_LENGTH)) {
    invalid('bad_header', 'malformed header: impossible ciphertext length');
  }
  const length = Number(ciphertextLength);
  return {
    formatVersion,
    kdf: { algorithm: 'scrypt', N, r, p, salt: Buffer.from(buf.subarray(saltAt, ivAt)) },
    iv: Buffer.from(buf.subarray(ivAt, lengthAt)),
    headerLength,
    ciphertextLength: length,
    totalLength: headerLength + length + TAG_LENGTH,
  };
}

/** Header plus the length checks of the whole file: everything short of decrypting. */
function readContainer(buf: Buffer): SnapshotHeader {
  const header = readHeader(buf);
  if (buf.length < header.totalLength) truncated(buf.length, header.totalLength, 'the snapshot');
  if (buf.length > header.totalLength) {
    const extra = buf.length - header.totalLength;
    invalid(
      'trailing_data',
      `file has ${extra} unexpected byte${extra === 1 ? '' : 's'} after the end of the snapshot (modified or concatenated?)`,
    );
  }
  return header;
}

function encodeHeader(kdf: KdfParamsWithSalt, iv: Buffer, ciphertextLength: number): Buffer {
  const header = Buffer.alloc(FIXED_PREFIX + SCRYPT_PARAMS_LENGTH + SALT_LENGTH + IV_LENGTH + LENGTH_FIELD);
  let at = SNAPSHOT_MAGIC.copy(header, 0);
  at = header.writeUInt16BE(SNAPSHOT_FORMAT_VERSION, at);
  at = header.writeUInt8(KDF_SCRYPT, at);
  at = header.writeUInt16BE(SCRYPT_PARAMS_LENGTH, at);
  at = header.writeUInt32BE(kdf.N, at);
  at = header.writeUInt32BE(kdf.r, at);
  at = header.writeUInt32BE(kdf.p, at);
  at += kdf.salt.copy(header, at);
  at += iv.copy(header, at);
  header.writeBigUInt64BE(BigInt(ciphertextLength), at);
  return header;
}

/**
 * Encrypts an already-compressed body into a snapshot container. The layer below
 * encodeSnapshot: useful on its own to re-wrap a body, and for tests of the layers above.
 */
export function encryptSnapshotBody(body: Buffer, key: Buffer, kdf: KdfParamsWithSalt): Buffer {
  assertDataKey(key);
  const problem = checkKdfParams(kdf);
  if (problem) throw new Error(`invalid KDF parameters: ${problem}`);
  if (kdf.salt.length !== SALT_LENGTH) throw new Error(`the snapshot salt must be ${SALT_LENGTH} bytes`);
  // Random, never caller-chosen: the same key encrypts every export until the password
  // changes, and a repeated IV under GCM leaks plaintext and the authentication key.
  const iv = randomBytes(IV_LENGTH);
  const header = encodeHeader(kdf, iv, body.length);
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_LENGTH });
  cipher.setAAD(header);
  const ciphertext = Buffer.concat([cipher.update(body), cipher.final()]);
  return Buffer.concat([header, ciphertext, cipher.getAuthTag()]);
}

/** Checks structure and authenticity and returns the (still compressed) body. */
export function decryptSnapshotBody(buf: Buffer, key: Buffer): Buffer {
  assertDataKey(key);
  return decryptContainer(buf, readContainer(buf), key);
}

function decryptContainer(buf: Buffer, header: SnapshotHeader, key: Buffer): Buffer {
  const ciphertext = buf.subarray(header.headerLength, header.headerLength + header.ciphertextLength);
  const tag = buf.subarray(header.headerLength + header.ciphertextLength);
  const decipher = createDecipheriv('aes-256-gcm', key, header.iv, { authTagLength: TAG_LENGTH });
  decipher.setAAD(buf.subarray(0, header.headerLength));
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
  } catch {
    // GCM gives one bit: a wrong key and a changed byte fail identically. Say both.
    return invalid(
      'auth_failed',
      'cannot decrypt the snapshot: wrong password or the file was modified ' +
        '(AES-GCM cannot tell these apart; check the password that was set when the snapshot was exported)',
    );
  }
}

/** Refuse to write what decode would refuse to read: an export must always be restorable. */
function checkWritable(payload: SnapshotPayload): void {
  if (payload.formatVersion !== SNAPSHOT_FORMAT_VERSION) {
    throw new Error(`payload formatVersion ${payload.formatVersion} is not ${SNAPSHOT_FORMAT_VERSION}`);
  }
  const checked = parsePayload(payload);
  if (!checked.success) throw new Error(describeIssues(checked.error));
}

/** A payload without its rows: what a file says before its tables. */
export type SnapshotEnvelope = Omit<SnapshotPayload, 'tables'>;
/** What a SnapshotWriter is given: the counts may be left to what it writes. */
export type SnapshotWriterEnvelope = Omit<SnapshotEnvelope, 'counts'> & { counts?: Record<string, number> };

/** gzip members compressing at once; past this, the writer waits (bounds the text held in memory). */
const MAX_MEMBERS_IN_FLIGHT = 4;

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
 * unchanged; the members cost ~20 bytes each. Level GZIP_LEVEL: deflate's fast levels
 * (1-3) take half the time of the default 6 for ~6% larger files (mostly random keys and
 * hashes, which no level compresses). Nothing ever holds the whole JSON text.
 *
 * The writer checks the envelope and that every table of `counts` is written with exactly
 * that many rows, in any case; the rows themselves are trusted to be JSON objects in the
 * snapshot's form (the callers: JSON.stringify of checked rows, and the repository's
 * SQL and COPY conversion, which the snapshot-export tests hold to the same output).
 */
export class SnapshotWriter {
  private readonly members: Promise<Buffer>[] = [];
  /** Leading members already awaited by drain(). */
  private settled = 0;
  private pending: (string | Buffer)[] = [];
  private pendingLength = 0;
  private readonly written = new Map<string, number>();
  private current: string | undefined;
  private finished = false;

  /**
   * Without `counts` in the envelope, the file states the rows written (an export reads
   * one consistent snapshot, so what it wrote is what there was: counting the tables
   * first cost a tenth of a PostgreSQL export). With them, every table must match.
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
    if (!checked.success) throw new Error(describeIssues(checked.error));
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

  private wrote(table: string, rows: number): Promise<void> | undefined {
    this.written.set(table, rows);
    const waiting = this.members.length - this.settled;
    return waiting > MAX_MEMBERS_IN_FLIGHT ? this.drain() : undefined;
  }

  private async drain(): Promise<void> {
    while (this.members.length - this.settled > MAX_MEMBERS_IN_FLIGHT) {
      await this.members[this.settled];
      this.settled++;
    }
  }

  /**
   * The file: checks that every table was written whole (where counts were given),
   * compresses the rest, encrypts. The envelope, counts included, is the first gzip
   * member, compressed last.
   */
  async finish(): Promise<Buffer> {
    if (this.finished) throw new Error('snapshot writer: already finished');
    this.finished = true;
    const declared = this.envelope.counts;
    if (declared) {
      const wrong = Object.keys(declared)
        .filter((t) => this.written.get(t) !== declared[t])
        .map((t) => `${t}: count ${declared[t]}, written ${this.written.get(t) ?? 'no'} rows`);
      if (wrong.length > 0) throw new Error(`snapshot writer: rows do not match the counts (${wrong.join('; ')})`);
    }
    this.push(`${this.current === undefined ? '' : ']'}}}`, true);
    // Same text as JSON.stringify(payload): the envelope's fields, then "tables" last.
    const { formatVersion, schemaVersion, appVersion, createdAt } = this.envelope;
    const head = JSON.stringify({ formatVersion, schemaVersion, appVersion, createdAt, counts: declared ?? this.counts, tables: {} }).slice(0, -2);
    const body = Buffer.concat([gzipSync(head, { level: GZIP_LEVEL }), ...(await Promise.all(this.members))]);
    return encryptSnapshotBody(body, this.key, this.kdf);
  }

  private push(text: string | Buffer, force = false): void {
    if (text.length > 0) {
      this.pending.push(text);
      this.pendingLength += text.length;
    }
    if (this.pendingLength >= GZIP_PIECE_BYTES || (force && this.pendingLength > 0)) {
      const pending = this.pending;
      const piece =
        pending.length === 1 && Buffer.isBuffer(pending[0])
          ? pending[0]
          : pending.every((p) => typeof p === 'string')
            ? Buffer.from(pending.join(''), 'utf8')
            : Buffer.concat(pending.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : p)));
      const member = gzipAsync(piece, { level: GZIP_LEVEL, chunkSize: GZIP_CHUNK_BYTES });
      // Awaited by drain() or finish(); a writer abandoned half-way must not leave an
      // unhandled rejection behind.
      member.catch(() => undefined);
      this.members.push(member);
      this.pending = [];
      this.pendingLength = 0;
    }
  }
}

/** The file for a payload whose rows are JS objects (SnapshotWriter does the work). */
export async function encodeSnapshotAsync(payload: SnapshotPayload, key: Buffer, kdf: KdfParamsWithSalt): Promise<Buffer> {
  assertDataKey(key);
  checkWritable(payload);
  const { tables, ...envelope } = payload;
  const writer = new SnapshotWriter(envelope, key, kdf);
  for (const [name, rows] of Object.entries(tables)) {
    writer.table(name);
    for (let at = 0; at < rows.length; at += STRINGIFY_ROWS) {
      const slice = at === 0 && rows.length <= STRINGIFY_ROWS ? rows : rows.slice(at, at + STRINGIFY_ROWS);
      await writer.rows(JSON.stringify(slice).slice(1, -1), slice.length);
    }
  }
  return writer.finish();
}

/** The file for a payload. `key` is the 32-byte key derived with `kdf` (see crypto.ts). */
export function encodeSnapshot(payload: SnapshotPayload, key: Buffer, kdf: KdfParamsWithSalt): Buffer {
  checkWritable(payload);
  const body = gzipSync(Buffer.from(JSON.stringify(payload), 'utf8'), { level: GZIP_LEVEL });
  return encryptSnapshotBody(body, key, kdf);
}

/** Decrypts and fully validates a file; every refusal is a SnapshotInvalidError. */
export function decodeSnapshot(buf: Buffer, key: Buffer, options: DecodeOptions = {}): SnapshotPayload {
  const maxBytes = options.maxDecompressedBytes ?? DEFAULT_MAX_DECOMPRESSED_BYTES;
  assertDataKey(key);
  const header = readContainer(buf);
  const body = decryptContainer(buf, header, key);
  const json = inflate(body, maxBytes);

  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (err) {
    invalid('bad_json', `the snapshot contents are not valid JSON (${(err as Error).message})`);
  }
  const result = parsePayload(parsed);
  if (!result.success) invalid('bad_payload', describeIssues(result.error));
  if (result.data.formatVersion !== header.formatVersion) {
    invalid(
      'bad_payload',
      `invalid snapshot payload: contents say format version ${result.data.formatVersion}, header says ${header.formatVersion}`,
    );
  }
  return result.data;
}

/**
 * readHeader → deriveKey → decodeSnapshot, with the structural checks first so a cut-off
 * or foreign upload is refused before spending a key derivation on it.
 */
export async function openSnapshot(buf: Buffer, password: string, options: DecodeOptions = {}): Promise<SnapshotPayload> {
  return decodeSnapshot(buf, await deriveFileKey(buf, password), options);
}

/**
 * The data key of a file for a password, after the structural checks (so a cut-off or
 * foreign upload costs no key derivation). Restore keeps this key, sealed with the server
 * key, to decrypt the staged upload later without the password.
 */
export async function deriveFileKey(buf: Buffer, password: string): Promise<Buffer> {
  const header = readContainer(buf);
  return deriveKey(password, header.kdf);
}

function inflate(body: Buffer, maxBytes: number): string {
  let raw: Buffer;
  try {
    // maxOutputLength stops inflation as soon as the limit is passed, so a bomb never
    // allocates more than the limit.
    raw = gunzipSync(body, { maxOutputLength: maxBytes });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ERR_BUFFER_TOO_LARGE') {
      invalid('too_large', `the snapshot contents inflate beyond the limit of ${maxBytes} bytes; refused (possible zip bomb)`);
    }
    return invalid('bad_compression', `the snapshot contents are not valid gzip (${e.message})`);
  }
  try {
    return raw.toString('utf8');
  } catch {
    // V8 strings stop near 512 MiB; larger JSON cannot be parsed in one piece.
    return invalid('too_large', `the snapshot contents (${raw.length} bytes) are too large to parse`);
  }
}
