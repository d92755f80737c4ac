/**
 * Cursor pagination for API reads. The cursor is the last key of the previous page
 * (ids are UUIDv7, so id order is creation order): a page is "key after the cursor,
 * ordered by key, limit + 1", which stays correct while rows are added or removed,
 * unlike offsets, and costs one index range scan however deep the client pages.
 */
import { InvalidError } from './errors.js';

export interface PageRequest {
  limit?: number;
  cursor?: string | null;
}

export interface Page<T> {
  items: T[];
  /** The cursor of the next page, or null on the last page. */
  next: string | null;
}

export const DEFAULT_PAGE_LIMIT = 50;
export const MAX_PAGE_LIMIT = 500;

export function pageLimit(req: PageRequest): number {
  const limit = req.limit ?? DEFAULT_PAGE_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE_LIMIT) {
    throw new InvalidError(`limit must be an integer from 1 to ${MAX_PAGE_LIMIT}`);
  }
  return limit;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * PostgreSQL rejects a malformed uuid with a query error, which would surface as an
 * infrastructure failure; a bad cursor is the client's mistake, so say so.
 */
export function idCursor(req: PageRequest): string | undefined {
  if (req.cursor == null || req.cursor === '') return undefined;
  if (!UUID.test(req.cursor)) throw new InvalidError(`cursor "${req.cursor}" is not a cursor this list returned`);
  return req.cursor.toLowerCase();
}

/** Rows were fetched with limit + 1: the extra row only tells whether a next page exists. */
export function toPage<R, T>(rows: R[], limit: number, keyOf: (row: R) => string, view: (row: R) => T): Page<T> {
  const items = rows.slice(0, limit);
  const next = rows.length > limit && items.length > 0 ? keyOf(items[items.length - 1]!) : null;
  return { items: items.map(view), next };
}
