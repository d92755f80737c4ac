/**
 * Export: the pieces around the repository's consistent read. The export key is the
 * administrator's password-derived key, kept sealed under the server key since the
 * password was set (crypto.ts explains the choice), so a worker encrypts a file that the
 * password opens without the password ever passing through Redis or a job.
 */
import { readFileSync } from 'node:fs';
import { DomainError } from '../domain/errors.js';
import { unseal, type KdfParamsWithSalt } from '../crypto.js';
import { SNAPSHOT_FORMAT_VERSION } from './container.js';
import type { SnapshotEnvelope, SnapshotPayload } from './payload.js';
import type { SnapshotWriterEnvelope } from './writer.js';
import type { SnapshotTables } from './tables.js';

export const APP_VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

export interface SealedExportKey {
  exportKeySealed: string;
  exportKdf: { salt: string; N: number; r: number; p: number };
}

/** The key and KDF parameters that go into the file header. */
export function unsealExportKey(admin: SealedExportKey, serverKey: Buffer): { key: Buffer; kdf: KdfParamsWithSalt } {
  let key: Buffer;
  try {
    key = unseal(Buffer.from(admin.exportKeySealed, 'base64'), serverKey);
  } catch (err) {
    // Not an infrastructure hiccup: retrying cannot help until someone acts.
    throw new DomainError('CONFLICT', `the snapshot export key cannot be opened: ${(err as Error).message}`);
  }
  const { salt, N, r, p } = admin.exportKdf;
  return { key, kdf: { salt: Buffer.from(salt, 'base64'), N, r, p } };
}

export function buildSnapshotPayload(schemaVersion: string, tables: SnapshotTables, createdAt = new Date()): SnapshotPayload {
  const counts = Object.fromEntries(Object.entries(tables).map(([table, rows]) => [table, rows.length]));
  return { ...snapshotEnvelope(schemaVersion, counts, createdAt), tables };
}

/** What a file says before its rows. */
export function snapshotEnvelope(schemaVersion: string, counts: Record<string, number>, createdAt = new Date()): SnapshotEnvelope {
  return { ...exportEnvelope(schemaVersion, createdAt), counts };
}

/** The same for a SnapshotWriter that states the rows it wrote. */
export function exportEnvelope(schemaVersion: string, createdAt = new Date()): SnapshotWriterEnvelope {
  return {
    formatVersion: SNAPSHOT_FORMAT_VERSION,
    schemaVersion,
    appVersion: APP_VERSION,
    createdAt: createdAt.toISOString(),
  };
}

/**
 * The schema the exported rows are in. Rows are read through this process's table specs,
 * i.e. in the schema of the code; the database must be at exactly that schema, or a file
 * labelled with one version would carry rows of another.
 */
export function exportSchemaVersion(applied: readonly string[], known: readonly string[]): string {
  const appliedSet = new Set(applied);
  const unknown = applied.filter((name) => !known.includes(name));
  if (unknown.length > 0) {
    throw new DomainError(
      'CONFLICT',
      `the database has migrations this worker does not know (${unknown.join(', ')}): a newer meshq migrated it; ` +
        'run the same meshq version in every process before exporting',
    );
  }
  const missing = known.filter((name) => !appliedSet.has(name));
  if (missing.length > 0) {
    throw new DomainError('CONFLICT', `the database lacks migrations ${missing.join(', ')}: run \`npm run migrate\` before exporting`);
  }
  return known.at(-1)!;
}
