/**
 * Restore, before any row is written: open the file, bring its rows to the current schema
 * and check them. The API runs this on every upload (so a bad file is refused with a
 * reason and nothing changes); the restore job runs it again on the staged bytes, because
 * meshq may have been upgraded in between and the job must never trust what it did not
 * check itself.
 */
import type { UnitOfWork } from '../db/unit-of-work.js';
import { DomainError } from '../domain/errors.js';
import { createRepositories } from '../domain/repositories.js';
import type { SnapshotView } from '../domain/system/snapshot-repository.js';
import { decryptSecret } from '../domain/secrets.js';
import { seal, unseal } from './crypto.js';
import { SnapshotInvalidError } from './errors.js';
import { decodeSnapshot, deriveFileKey, type SnapshotPayload } from './format.js';
import { validateSnapshotTables, type SnapshotTables, type TableSpec } from './tables.js';
import { upgradeSnapshotTables } from './upgrades.js';

export interface PreparedSnapshot {
  /** The file's own header fields (schemaVersion is the file's, before upgrades). */
  meta: Omit<SnapshotPayload, 'tables'>;
  /** Rows at the current schema, validated. */
  tables: SnapshotTables;
  /** Migrations whose upgrade steps were applied. */
  upgradedThrough: string[];
}

export function prepareSnapshot(payload: SnapshotPayload, specs: readonly TableSpec[], serverKey: Buffer): PreparedSnapshot {
  const { tables, ...meta } = payload;
  const upgraded = upgradeSnapshotTables(payload.schemaVersion, tables);
  validateSnapshotTables(upgraded.tables, specs);
  checkSealedColumns(upgraded.tables, serverKey);
  return { meta, tables: upgraded.tables, upgradedThrough: upgraded.applied };
}

/**
 * Columns a snapshot carries still sealed under the exporting server's SECRET_KEY (node
 * private keys stay encrypted at rest inside the file too, so a file and its password are
 * not enough to read them). They open here only if this server has the same SECRET_KEY.
 * The usual way to get this wrong is moving from SQLite, whose key was generated into
 * data/secret.key, to PostgreSQL with a freshly generated SECRET_KEY: the restore would
 * succeed and every node's private key would be unreadable. Refused instead, saying why.
 */
const SEALED_COLUMNS = [{ table: 'node', column: 'private_key_enc' }] as const;

function checkSealedColumns(tables: SnapshotTables, serverKey: Buffer): void {
  for (const { table, column } of SEALED_COLUMNS) {
    const rows = tables[table] ?? [];
    let failed = 0;
    for (const row of rows) {
      try {
        decryptSecret(row[column] as string, serverKey);
      } catch {
        failed++;
      }
    }
    if (failed > 0) {
      throw new SnapshotInvalidError(
        'secret_key_mismatch',
        `${failed} of ${rows.length} values of ${table}.${column} do not open with this server's SECRET_KEY: the snapshot comes ` +
          "from a meshq with a different SECRET_KEY. Set SECRET_KEY to the exporting server's value (with SQLite, the " +
          'content of data/secret.key), restart, and upload again',
      );
    }
  }
}

/**
 * An upload: derives the file's data key from the password, decrypts and validates
 * everything. Returns the key sealed under the server key for staging: the job decrypts
 * the staged file with it, and the password itself is dropped here.
 */
export async function openUpload(
  file: Buffer,
  password: string,
  specs: readonly TableSpec[],
  serverKey: Buffer,
): Promise<PreparedSnapshot & { sealedKey: string }> {
  const key = await deriveFileKey(file, password);
  try {
    const prepared = prepareSnapshot(decodeSnapshot(file, key), specs, serverKey);
    return { ...prepared, sealedKey: seal(key, serverKey).toString('base64') };
  } finally {
    key.fill(0);
  }
}

/**
 * Keeps a checked upload for the restore job: the encrypted bytes as uploaded, and the
 * file's data key sealed under the server key. The job gets only the staged id.
 */
export async function stageUpload(
  deps: { uow: UnitOfWork; serverKey: Buffer },
  file: Buffer,
  prepared: PreparedSnapshot & { sealedKey: string },
): Promise<SnapshotView> {
  return deps.uow.write((em) =>
    createRepositories(em, { serverKey: deps.serverKey }).snapshots.storeArchive({
      kind: 'staged',
      data: file,
      schemaVersion: prepared.meta.schemaVersion,
      counts: prepared.meta.counts,
      sealedKey: prepared.sealedKey,
    }),
  );
}

/** A staged upload, in the restore job. */
export function openStaged(file: Buffer, sealedKey: string, serverKey: Buffer, specs: readonly TableSpec[]): PreparedSnapshot {
  let key: Buffer;
  try {
    key = unseal(Buffer.from(sealedKey, 'base64'), serverKey);
  } catch (err) {
    // Retrying cannot help: the key was sealed under another SECRET_KEY.
    throw new DomainError('CONFLICT', `the staged upload cannot be opened: ${(err as Error).message}; upload the file again`);
  }
  try {
    return prepareSnapshot(decodeSnapshot(file, key), specs, serverKey);
  } finally {
    key.fill(0);
  }
}
