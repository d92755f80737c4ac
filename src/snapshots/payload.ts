/**
 * The snapshot's contents: gzip(JSON) of a payload, its schema, the inflation caps, and
 * decoding a whole file in memory into a checked payload (decodeSnapshot: tools and
 * tests). meshq itself reads files as streams (reader.ts), with the same caps and schema.
 */
import { constants as bufferConstants } from 'node:buffer';
import { gunzipSync } from 'node:zlib';
import { z } from 'zod';
import { describeIssues } from '../domain/zod-errors.js';
import { assertDataKey, decryptSnapshotBody, invalid, readContainer, SNAPSHOT_FORMAT_VERSION } from './container.js';

export interface SnapshotPayload {
  formatVersion: number;
  schemaVersion: string;
  appVersion: string;
  /** ISO 8601 */
  createdAt: string;
  counts: Record<string, number>;
  tables: Record<string, Record<string, unknown>[]>;
}

/** A payload without its rows: what a file says before its tables. */
export type SnapshotEnvelope = Omit<SnapshotPayload, 'tables'>;

const MiB = 1024 * 1024;

/**
 * How far a file's body may inflate: never beyond `maxBytes`, and never beyond `maxRatio`
 * times its compressed size (but always up to `floorBytes`, so a small file of very
 * repetitive rows still opens). meshq's own files are mostly random keys, ids and hashes,
 * which deflate barely shrinks; a gzip bomb inflates a thousandfold and more, so the
 * ratio stops it long before the absolute cap would.
 */
export interface InflationLimits {
  maxBytes: number;
  maxRatio: number;
  floorBytes: number;
}

/**
 * The absolute cap is what can be parsed at all: JSON.parse needs one string, and V8's
 * strings end near 512 MiB. Uploads themselves are limited to 512 MiB too.
 */
export const DEFAULT_INFLATION_LIMITS: Readonly<InflationLimits> = Object.freeze({
  maxBytes: Math.min(512 * MiB, bufferConstants.MAX_STRING_LENGTH),
  maxRatio: 64,
  floorBytes: 16 * MiB,
});

/** The most a body of `compressedBytes` may inflate to under `limits`. */
export function inflationCap(compressedBytes: number, limits: InflationLimits = DEFAULT_INFLATION_LIMITS): number {
  return Math.min(limits.maxBytes, Math.max(limits.floorBytes, compressedBytes * limits.maxRatio));
}

/**
 * The payload's envelope. `tables` is checked one of two ways: the full schema (every row
 * a JSON object, with zod's messages naming the bad ones) only when the quick scan below
 * finds a row that is not a plain object; otherwise a schema that takes the row arrays as
 * they are. zod copies every array and row it checks, which on a large file costs more
 * than everything else the check does, only to learn that the rows are objects.
 */
const envelopeShape = {
  formatVersion: z.number().int().positive(),
  schemaVersion: z.string().min(1),
  appVersion: z.string().min(1),
  createdAt: z.iso.datetime({ offset: true }),
  counts: z.record(z.string(), z.number().int().nonnegative()),
};
export const envelopeSchema = z.object(envelopeShape);

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

export const fullPayloadSchema = payloadSchema(z.record(z.string(), z.array(z.record(z.string(), z.unknown()))));
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
export const describePayloadIssues = (error: z.ZodError): string =>
  `invalid snapshot payload: ${describeIssues(error, { root: '(root)', limit: 5 })}`;

/** Refuse to write what decode would refuse to read: an export must always be restorable. */
export function checkWritable(payload: SnapshotPayload): void {
  if (payload.formatVersion !== SNAPSHOT_FORMAT_VERSION) {
    throw new Error(`payload formatVersion ${payload.formatVersion} is not ${SNAPSHOT_FORMAT_VERSION}`);
  }
  const checked = parsePayload(payload);
  if (!checked.success) throw new Error(describePayloadIssues(checked.error));
}

/** Decrypts and fully validates a file; every refusal is a SnapshotInvalidError. */
export function decodeSnapshot(buf: Buffer, key: Buffer, limits: InflationLimits = DEFAULT_INFLATION_LIMITS): SnapshotPayload {
  assertDataKey(key);
  const header = readContainer(buf);
  const body = decryptSnapshotBody(buf, key, header);
  const json = inflate(body, inflationCap(body.length, limits));

  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (err) {
    invalid('bad_json', `the snapshot contents are not valid JSON (${(err as Error).message})`);
  }
  const result = parsePayload(parsed);
  if (!result.success) invalid('bad_payload', describePayloadIssues(result.error));
  if (result.data.formatVersion !== header.formatVersion) {
    invalid(
      'bad_payload',
      `invalid snapshot payload: contents say format version ${result.data.formatVersion}, header says ${header.formatVersion}`,
    );
  }
  return result.data;
}

function inflate(body: Buffer, maxBytes: number): string {
  let raw: Buffer;
  try {
    // maxOutputLength makes zlib stop as soon as its output passes the cap, so a bomb never
    // allocates more than the cap (and one output chunk).
    raw = gunzipSync(body, { maxOutputLength: maxBytes });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ERR_BUFFER_TOO_LARGE') {
      invalid(
        'too_large',
        `the snapshot contents inflate beyond ${maxBytes} bytes (from ${body.length} compressed); refused as a possible zip bomb`,
      );
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
