/**
 * PostgreSQL's COPY, for the snapshot export and restore: bulk rows in and out as text
 * streams on a raw node-postgres client (pg-copy-streams in; out, src/db/pg-copy-out.ts),
 * instead of rows as JS objects through the ORM and Kysely, which cannot carry COPY.
 *
 * Two ways to a client:
 *  - withPgReadSnapshot: a pooled client of its own, in a REPEATABLE READ, READ ONLY
 *    transaction (the export's one consistent read, on a second connection next to the
 *    job's transaction);
 *  - the transaction handle's pgClient (src/db/unit-of-work.ts): the client of the write
 *    transaction, which the unit of work holds itself on PostgreSQL, so that a restore's
 *    rows go in by COPY inside the same transaction as its deletes and the job's other
 *    writes.
 */
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import pg, { type PoolClient } from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { Em } from './orm.js';
import { pgPool } from './pg-client.js';

/**
 * Runs `fn` on a pooled client of its own, inside a REPEATABLE READ, READ ONLY
 * transaction: every statement sees the same instant. The client goes back to the pool
 * only after a clean commit; after any failure (a COPY cut off half-way included) it is
 * discarded, never reused in an unknown state.
 */
export async function withPgReadSnapshot<T>(em: Em, fn: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await (await pgPool(em)).connect();
  let failed = true;
  try {
    // COPY text is read as UTF-8 bytes, whatever the server's default client encoding.
    await client.query("begin isolation level repeatable read read only; set local client_encoding to 'UTF8'");
    const result = await fn(client);
    await client.query('commit');
    failed = false;
    return result;
  } catch (err) {
    throw dbError(em, err);
  } finally {
    client.release(failed);
  }
}

/**
 * A server's error as the ORM's exception (UniqueConstraintViolationException, …), as for
 * every query the ORM runs, so that jobs classify it the same way (src/jobs/errors.ts);
 * anything else passes through untouched.
 */
export const dbError = (em: Em, err: unknown): unknown => (err instanceof pg.DatabaseError ? em.getDriver().convertException(err) : err);

/**
 * `COPY … FROM STDIN` fed from `source` (text chunks, each ending at a line end); resolves
 * with the rows the server took once it confirmed them. A failure on either side (the
 * source throwing, the server refusing a row) rejects, and the server's COPY is aborted.
 */
export async function copyIn(client: PoolClient, sql: string, source: Iterable<string> | AsyncIterable<string>): Promise<number> {
  const sink = client.query(copyFrom(sql));
  await pipeline(Readable.from(source, { objectMode: false }), sink);
  return sink.rowCount;
}

/**
 * `COPY … FROM STDIN` written to batch by batch (text or bytes ending at line ends), for a
 * source that pushes: `write` resolves once the stream has room again, `end` with the rows
 * the server confirmed. `abort` cancels the COPY (the server rolls it back with the
 * transaction) and resolves once the stream is done with the connection.
 */
export function copyInStream(client: PoolClient, sql: string): { write(text: string | Buffer): Promise<void>; end(): Promise<number>; abort(err: unknown): Promise<void> } {
  const sink = client.query(copyFrom(sql));
  let failure: unknown;
  sink.on('error', (err) => {
    failure ??= err;
  });
  return {
    async write(text) {
      if (failure) throw failure;
      if (!sink.write(text)) await once(sink, 'drain');
      if (failure) throw failure;
    },
    async end() {
      if (failure) throw failure;
      sink.end();
      await finished(sink);
      return sink.rowCount;
    },
    async abort(err) {
      if (!sink.destroyed) sink.destroy(err instanceof Error ? err : new Error(String(err)));
      await finished(sink).catch(() => undefined);
    },
  };
}
