import { DomainError } from '../domain/errors.js';

/**
 * Why a snapshot was refused, for programs (API clients, tests, metrics); the message is
 * for people. `schema_too_new`, `schema_unknown`, `constraint_violation` and
 * `secret_key_mismatch` belong to restore (a file from a newer or foreign meshq schema,
 * rows the current schema refuses, node keys sealed under another SECRET_KEY), kept here
 * so every refusal of an uploaded file shares one error type and one HTTP status.
 */
export type SnapshotInvalidReason =
  | 'not_snapshot'
  | 'truncated'
  | 'trailing_data'
  | 'unsupported_version'
  | 'unsupported_kdf'
  | 'bad_header'
  | 'auth_failed'
  | 'bad_compression'
  | 'too_large'
  | 'bad_json'
  | 'bad_payload'
  | 'schema_too_new'
  | 'schema_unknown'
  | 'constraint_violation'
  | 'secret_key_mismatch';

/** An uploaded or stored snapshot that cannot be used; never retried, nothing was changed. */
export class SnapshotInvalidError extends DomainError {
  readonly reason: SnapshotInvalidReason;

  constructor(reason: SnapshotInvalidReason, message: string) {
    super('SNAPSHOT_INVALID', message, { reason });
    this.reason = reason;
  }
}
