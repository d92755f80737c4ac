/**
 * Entity ids: UUIDv7. Time-ordered, so primary-key indexes stay append-mostly and "order
 * by id" is creation order (cursor paging relies on it); random enough to be created on
 * any worker without coordination; plain strings, so snapshots move them between SQLite
 * and PostgreSQL unchanged.
 *
 * Made by `uuidv7`, whose generator keeps ids of one process increasing within a
 * millisecond (a counter) and draws its random bits from a buffer it refills in one call;
 * `uuid`'s v7 asks WebCrypto for 16 fresh bytes on every id, which showed in the worker's
 * profile on every job (the audit row's id) and on every submission (the job id).
 */
import { validate } from 'uuid';
import { uuidv7 } from 'uuidv7';

export const newId = (): string => uuidv7();

/** Any RFC 9562 UUID in its 36-character form, either case. */
export const isUuid = (s: unknown): s is string => typeof s === 'string' && validate(s);
