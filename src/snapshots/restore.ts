/**
 * Restore, before any row is written: open the file, bring its rows to the current schema
 * and check them. The API runs this on every upload (so a bad file is refused with a
 * reason and nothing changes). The restore job checks the staged bytes again unless the
 * API's check provably applies to them: the API seals, next to the file's key and under
 * the server key, the sha256 of the bytes it checked and the schema and app version it
 * checked them against. The job skips the row checks (a third of its CPU) only when the
 * seal opens, the staged bytes hash to that value and this process runs that same schema
 * and app version; an upgrade in between, a changed byte or an old staged upload means
 * checking everything again. Only a holder of SECRET_KEY can write such a seal.
 *
 * Nothing here touches the database: the API stages a checked upload and the restore job
 * loads it (src/jobs/processors/snapshots.ts).
 */
import { createHash } from 'node:crypto';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { DomainError } from '../domain/errors.js';
import { KEY_LENGTH, seal, unseal } from '../crypto.js';
import { LATEST_SCHEMA_VERSION } from '../migrations/index.js';
import { deriveFileKey } from './container.js';
import { APP_VERSION } from './export.js';
import { DEFAULT_INFLATION_LIMITS, type InflationLimits, type SnapshotEnvelope } from './payload.js';
import { streamSnapshot, type RowSink, type SnapshotSource, type StreamedSnapshot } from './reader.js';
import type { TableSpec } from './tables.js';

/** What a checked or restored file was: its envelope and the upgrades its rows went through. */
export interface PreparedSnapshot {
  /** The file's own header fields (schemaVersion is the file's, before upgrades). */
  meta: SnapshotEnvelope;
  /** Migrations whose upgrade steps were applied. */
  upgradedThrough: string[];
}

/** What the API's check covered: these bytes, against this schema and code. */
interface CheckedBy {
  sha256: string;
  schemaVersion: string;
  appVersion: string;
}

/** A file's sha256, hashed a megabyte at a time with a yield to the loop between. */
async function sha256Of(source: SnapshotSource): Promise<string> {
  const hash = createHash('sha256');
  if (Buffer.isBuffer(source)) {
    const step = 1024 * 1024;
    for (let at = 0; at < source.length; at += step) {
      hash.update(source.subarray(at, at + step));
      if (at + step < source.length) await yieldToLoop();
    }
  } else {
    for await (const chunk of source) hash.update(chunk);
  }
  return hash.digest('hex');
}

/** The sealed value: the file's data key, then the check's JSON. */
function sealStaged(key: Buffer, sha256: string, serverKey: Buffer): string {
  const by: CheckedBy = { sha256, schemaVersion: LATEST_SCHEMA_VERSION, appVersion: APP_VERSION };
  return seal(Buffer.concat([key, Buffer.from(JSON.stringify(by), 'utf8')]), serverKey).toString('base64');
}

/** The data key, and whether the API's check covers these bytes in this process. */
async function openSealed(sealed: Buffer, file: () => SnapshotSource): Promise<{ key: Buffer; alreadyChecked: boolean }> {
  const key = Buffer.from(sealed.subarray(0, KEY_LENGTH));
  let by: Partial<CheckedBy> | undefined;
  if (sealed.length > KEY_LENGTH) {
    try {
      by = JSON.parse(sealed.subarray(KEY_LENGTH).toString('utf8')) as Partial<CheckedBy>;
    } catch {
      by = undefined;
    }
  }
  sealed.fill(0);
  // The hash only matters when the rest matches (hashing is a pass over the whole file).
  const alreadyChecked = by?.schemaVersion === LATEST_SCHEMA_VERSION && by.appVersion === APP_VERSION && by.sha256 === (await sha256Of(file()));
  return { key, alreadyChecked };
}

/** A checked upload, ready to stage: the file's data key sealed under the server key. */
export type OpenedUpload = PreparedSnapshot & { sealedKey: string };

/**
 * An upload's bytes: its size, and its bytes from the start as often as asked (the API's
 * spool file of the upload; a stored file).
 */
export interface UploadSource {
  readonly size: number;
  read(): AsyncIterable<Buffer>;
}

/** Bytes a header takes at most (the scrypt header is 57); more is read, to say what is wrong with a short file. */
const HEAD_BYTES = 256;

/** The first HEAD_BYTES of a file (all of it if shorter). */
async function headOf(file: UploadSource): Promise<Buffer> {
  const parts: Buffer[] = [];
  let have = 0;
  for await (const chunk of file.read()) {
    parts.push(chunk);
    have += chunk.length;
    if (have >= HEAD_BYTES) break;
  }
  return Buffer.concat(parts).subarray(0, HEAD_BYTES);
}

/**
 * An upload: reads its header and checks its length (so a cut-off or foreign upload, or
 * one whose header asks for too costly a derivation, costs no key derivation), derives
 * the file's data key from the password, then streams the file through every check
 * (src/snapshots/reader.ts) without keeping its rows, hashing it on the way. Returns the
 * key sealed under the server key for staging: the job decrypts the staged file with it,
 * and the password itself is dropped here. The API runs this in a worker thread
 * (upload-check.ts) on the spool file of the upload.
 */
export async function openUpload(
  source: UploadSource,
  password: string,
  specs: readonly TableSpec[],
  serverKey: Buffer,
  limits: InflationLimits = DEFAULT_INFLATION_LIMITS,
): Promise<OpenedUpload> {
  const key = await deriveFileKey(await headOf(source), source.size, password);
  try {
    const hash = createHash('sha256');
    async function* hashed(): AsyncGenerator<Buffer> {
      for await (const chunk of source.read()) {
        hash.update(chunk);
        yield chunk;
      }
    }
    const checked = await streamSnapshot(hashed(), key, { specs, validate: true, serverKey, limits });
    return { ...checked, sealedKey: sealStaged(key, hash.digest('hex'), serverKey) };
  } finally {
    key.fill(0);
  }
}

/**
 * A staged upload, in the restore job: opens the sealed key and streams the file's rows
 * into `sink`, checking them again unless the API's check provably covers them. `file`
 * gives the staged bytes (called once more when the seal's hash must be compared).
 */
export async function restoreStaged(
  file: () => SnapshotSource,
  sealedKey: string,
  serverKey: Buffer,
  specs: readonly TableSpec[],
  sink: RowSink,
): Promise<StreamedSnapshot> {
  let opened: { key: Buffer; alreadyChecked: boolean };
  try {
    opened = await openSealed(unseal(Buffer.from(sealedKey, 'base64'), serverKey), file);
  } catch (err) {
    // Retrying cannot help: the key was sealed under another SECRET_KEY.
    throw new DomainError('CONFLICT', `the staged upload cannot be opened: ${(err as Error).message}; upload the file again`);
  }
  try {
    return await streamSnapshot(file(), opened.key, { specs, validate: !opened.alreadyChecked, serverKey, sink });
  } finally {
    opened.key.fill(0);
  }
}
