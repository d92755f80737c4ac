/**
 * The pg client under a PostgreSQL write transaction. The unit of work
 * (src/db/unit-of-work.ts) takes a client from the ORM's own pool for each write
 * transaction and hands the entity manager a transaction context on that client, so the
 * ORM keeps working through Kysely as usual, while the transaction handle gives the client
 * itself to the code that needs it (COPY in src/db/pg-copy.ts, the bound statements of
 * src/db/sql.ts).
 */
import type { PostgreSqlConnection } from '@mikro-orm/postgresql';
import { Kysely, PostgresDialect } from 'kysely';
import type { Pool, PoolClient } from 'pg';
import { assertUtf8, UTF8_SESSION } from './encoding.js';
import type { Em } from './orm.js';

/** The pg Pool behind the ORM (MikroORM's public accessor). */
export const pgPool = (em: Em): Promise<Pool> => (em.getConnection() as unknown as PostgreSqlConnection).getNativeClient();

/** Pooled clients -> the transaction context made for them (made once per client). */
const contexts = new WeakMap<PoolClient, Kysely<unknown>>();

/**
 * The transaction context for a write transaction on `client`: a Kysely instance whose one
 * connection is that client, so that the ORM and `em.getKysely()` run on it as on the
 * ORM's own connections (same pool, same type parsers). Made once per pooled client and
 * kept with it: the pool's clients live long, and each is in one transaction at a time.
 * Releasing the client is left to the caller, who acquired it.
 */
export async function contextOnClient(client: PoolClient, pool: Pool): Promise<Kysely<unknown>> {
  let kysely = contexts.get(client);
  if (!kysely) {
    assertUtf8((await client.query(UTF8_SESSION)).rows);
    const held = { query: client.query.bind(client), release: () => undefined };
    kysely = new Kysely<unknown>({
      dialect: new PostgresDialect({
        pool: { connect: async () => held as never, end: async () => undefined, options: pool.options },
      }),
    });
    contexts.set(client, kysely);
  }
  return kysely;
}
