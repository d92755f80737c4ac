/**
 * Entity ids: UUIDv7. Time-ordered, so primary-key indexes stay append-mostly and "order
 * by id" is creation order (cursor paging relies on it); random enough to be created on
 * any worker without coordination; plain strings, so snapshots move them between SQLite
 * and PostgreSQL unchanged.
 */
import { v7, validate } from 'uuid';

export const newId = (): string => v7();

/** Any RFC 9562 UUID in its 36-character form, either case. */
export const isUuid = (s: unknown): s is string => typeof s === 'string' && validate(s);
