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
import { DomainError } from '../domain/errors.js';
import { decryptSecret } from '../domain/secrets.js';
import { seal, unseal } from '../crypto.js';
import { deriveFileKey } from './container.js';
import { SnapshotInvalidError } from './errors.js';
import { decodeSnapshot, DEFAULT_INFLATION_LIMITS, type InflationLimits, type SnapshotPayload } from './payload.js';
import { createHash } from 'node:crypto';
import { LATEST_SCHEMA_VERSION } from '../migrations/index.js';
import { APP_VERSION } from './export.js';
import { KEY_LENGTH } from '../crypto.js';
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

export function prepareSnapshot(
  payload: SnapshotPayload,
  specs: readonly TableSpec[],
  serverKey: Buffer,
  opts: { alreadyChecked?: boolean } = {},
): PreparedSnapshot {
  const { tables, ...meta } = payload;
  const upgraded = upgradeSnapshotTables(payload.schemaVersion, tables);
  if (!opts.alreadyChecked) {
    validateSnapshotTables(upgraded.tables, specs);
    checkSealedColumns(upgraded.tables, serverKey);
  }
  return { meta, tables: upgraded.tables, upgradedThrough: upgraded.applied };
}

/** What the API's check covered: these bytes, against this schema and code. */
interface CheckedBy {
  sha256: string;
  schemaVersion: string;
  appVersion: string;
}

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');
const currentCheck = (file: Buffer): CheckedBy => ({ sha256: sha256(file), schemaVersion: LATEST_SCHEMA_VERSION, appVersion: APP_VERSION });

/** The sealed value: the file's data key, then the check's JSON. */
function sealStaged(key: Buffer, file: Buffer, serverKey: Buffer): string {
  return seal(Buffer.concat([key, Buffer.from(JSON.stringify(currentCheck(file)), 'utf8')]), serverKey).toString('base64');
}

/** The data key, and whether the API's check covers these bytes in this process. */
function openSealed(sealed: Buffer, file: Buffer): { key: Buffer; alreadyChecked: boolean } {
  const key = Buffer.from(sealed.subarray(0, KEY_LENGTH));
  let alreadyChecked = false;
  if (sealed.length > KEY_LENGTH) {
    try {
      const by = JSON.parse(sealed.subarray(KEY_LENGTH).toString('utf8')) as Partial<CheckedBy>;
      const now = currentCheck(file);
      alreadyChecked = by.sha256 === now.sha256 && by.schemaVersion === now.schemaVersion && by.appVersion === now.appVersion;
    } catch {
      alreadyChecked = false;
    }
  }
  sealed.fill(0);
  return { key, alreadyChecked };
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
      // Null: nothing sealed (a node whose agent holds its own key).
      if (row[column] === null) continue;
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

/** A checked upload, ready to stage: the file's data key sealed under the server key. */
export type OpenedUpload = PreparedSnapshot & { sealedKey: string };

/**
 * An upload: derives the file's data key from the password, decrypts and validates
 * everything. Returns the key sealed under the server key for staging: the job decrypts
 * the staged file with it, and the password itself is dropped here. Synchronous work on
 * the whole file: the API runs it in a worker thread (upload-check.ts).
 */
export async function openUpload(
  file: Buffer,
  password: string,
  specs: readonly TableSpec[],
  serverKey: Buffer,
  limits: InflationLimits = DEFAULT_INFLATION_LIMITS,
): Promise<OpenedUpload> {
  const key = await deriveFileKey(file, password);
  try {
    const prepared = prepareSnapshot(decodeSnapshot(file, key, limits), specs, serverKey);
    return { ...prepared, sealedKey: sealStaged(key, file, serverKey) };
  } finally {
    key.fill(0);
  }
}

/** A staged upload, in the restore job. */
export function openStaged(file: Buffer, sealedKey: string, serverKey: Buffer, specs: readonly TableSpec[]): PreparedSnapshot {
  let opened: { key: Buffer; alreadyChecked: boolean };
  try {
    opened = openSealed(unseal(Buffer.from(sealedKey, 'base64'), serverKey), file);
  } catch (err) {
    // Retrying cannot help: the key was sealed under another SECRET_KEY.
    throw new DomainError('CONFLICT', `the staged upload cannot be opened: ${(err as Error).message}; upload the file again`);
  }
  try {
    return prepareSnapshot(decodeSnapshot(file, opened.key), specs, serverKey, { alreadyChecked: opened.alreadyChecked });
  } finally {
    opened.key.fill(0);
  }
}
