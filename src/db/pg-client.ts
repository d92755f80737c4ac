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
import type { Pool, PoolClient, QueryResult, QueryResultRow } from 'pg';
import { assertUtf8, UTF8_SESSION } from './encoding.js';
import type { Em } from './orm.js';
import { inlineValues } from './pg-literals.js';

/** The pg Pool behind the ORM (MikroORM's public accessor). */
export const pgPool = (em: Em): Promise<Pool> => (em.getConnection() as unknown as PostgreSqlConnection).getNativeClient();

/**
 * A pooled client as a write transaction uses it, made once per client and kept with it
 * (the pool's clients live long, and each is in one transaction at a time):
 * - `context`, a Kysely instance whose one connection is this client, so that the ORM and
 *   `em.getKysely()` run on it as on the ORM's own connections (same pool, same type
 *   parsers);
 * - a BEGIN that waits for the transaction's first statement (`deferBegin`): a job's first
 *   statement is most often a bound statement (src/db/sql.ts) whose values can be written
 *   as literals, and then BEGIN, the data lock and that statement go to the server as one
 *   simple query, one round trip fewer per job (docs/architecture.md, "The transaction
 *   protocol"). Any other first statement (the ORM's, or one with bytes) sends BEGIN on
 *   its own first, as before. Nothing reaches the client except through here, so no
 *   statement can run before its transaction's BEGIN.
 * Releasing the client is left to the caller, who acquired it.
 */
export class TransactionClient {
  readonly context: Kysely<unknown>;
  private pending: string | undefined;

  private constructor(
    readonly client: PoolClient,
    pool: Pool,
  ) {
    const held = { query: async (text: string, values?: unknown[]) => (await this.begun(), client.query(text, values)), release: () => undefined };
    this.context = new Kysely<unknown>({
      dialect: new PostgresDialect({
        pool: { connect: async () => held as never, end: async () => undefined, options: pool.options },
      }),
    });
  }

  /** The transaction client for `client`, its session checked to be UTF8 when first held. */
  static async of(client: PoolClient, pool: Pool): Promise<TransactionClient> {
    let held = clients.get(client);
    if (!held) {
      assertUtf8((await client.query(UTF8_SESSION)).rows);
      held = new TransactionClient(client, pool);
      clients.set(client, held);
    }
    return held;
  }

  /** Starts a transaction whose BEGIN (`begin`, a simple query) goes with its first statement. */
  deferBegin(begin: string): void {
    this.pending = begin;
  }

  /** Sends a BEGIN that is still waiting, on its own. */
  async begun(): Promise<void> {
    const begin = this.pending;
    if (begin === undefined) return;
    this.pending = undefined;
    await this.client.query(begin);
  }

  /**
   * A bound statement (`text` with `?` placeholders, `pgText` its `$n` form, `values` its
   * parameters as sent). When the transaction's BEGIN is still waiting and the values can
   * be written into the text as literals (src/db/pg-literals.ts), both go as one simple query.
   */
  async query<R extends QueryResultRow>(text: string, pgText: string, values: unknown[]): Promise<QueryResult<R>> {
    const begin = this.pending;
    const inlined = begin === undefined ? undefined : inlineValues(text, values);
    if (inlined !== undefined) {
      this.pending = undefined;
      const results = (await this.client.query(`${begin}; ${inlined}`)) as unknown as QueryResult<R>[];
      return results[results.length - 1]!;
    }
    await this.begun();
    return this.client.query<R>(pgText, values);
  }

  /** A simple query that ends the transaction (commit, the closing write): with BEGIN if it is still waiting. */
  async end(text: string): Promise<unknown> {
    const begin = this.pending;
    this.pending = undefined;
    return this.client.query(begin === undefined ? text : `${begin}; ${text}`);
  }

  /** Rollback: nothing to undo when BEGIN never went. */
  async rollback(): Promise<void> {
    if (this.pending !== undefined) {
      this.pending = undefined;
      return;
    }
    await this.client.query('rollback');
  }
}

const clients = new WeakMap<PoolClient, TransactionClient>();
