/**
 * The pg client under a PostgreSQL write transaction. The unit of work
 * (src/db/unit-of-work.ts) takes a client from the ORM's own pool for each write
 * transaction and hands the entity manager a transaction context on that client, so that
 * code which needs the client itself (COPY in src/db/pg-copy.ts, the bound statements of
 * src/db/sql.ts) finds it from the entity manager, while the ORM keeps working through
 * Kysely as usual.
 */
import type { PostgreSqlConnection } from '@mikro-orm/postgresql';
import { Kysely, PostgresDialect } from 'kysely';
import type { Pool, PoolClient } from 'pg';
import type { Em } from './orm.js';

/** The pg Pool behind the ORM (MikroORM's public accessor). */
export const pgPool = (em: Em): Promise<Pool> => (em.getConnection() as unknown as PostgreSqlConnection).getNativeClient();

/** Transaction contexts (the Kysely handed to the entity manager) -> the client under them. */
const heldClients = new WeakMap<object, PoolClient>();
/** Pooled clients -> the transaction context made for them (made once per client). */
const contexts = new WeakMap<PoolClient, Kysely<unknown>>();

/**
 * The transaction context for a write transaction on `client`: a Kysely instance whose one
 * connection is that client, so that the ORM, `em.getKysely()` and src/db/sql.ts run on it
 * as on the ORM's own connections (same pool, same type parsers). Made once per pooled
 * client and kept with it: the pool's clients live long, and each is in one transaction
 * at a time. Releasing the client is left to the caller, who acquired it.
 */
export function contextOnClient(client: PoolClient, pool: Pool): Kysely<unknown> {
  let kysely = contexts.get(client);
  if (!kysely) {
    const held = { query: client.query.bind(client), release: () => undefined };
    kysely = new Kysely<unknown>({
      dialect: new PostgresDialect({
        pool: { connect: async () => held as never, end: async () => undefined, options: pool.options },
      }),
    });
    contexts.set(client, kysely);
    heldClients.set(kysely, client);
  }
  return kysely;
}

/**
 * The raw client under the entity manager's write transaction (PostgreSQL; the unit of
 * work holds one for every write transaction): for COPY, and for src/db/sql.ts.
 */
export function heldClientOf(em: Em): PoolClient | undefined {
  const ctx = em.getTransactionContext() as object | undefined;
  return ctx ? heldClients.get(ctx) : undefined;
}
