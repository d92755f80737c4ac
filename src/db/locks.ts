/**
 * Every PostgreSQL advisory lock meshq takes. The keys share one 64-bit space with every
 * other application on the same database, so they are fixed, arbitrary and kept together
 * here, where a new one can be checked against the others.
 *
 *  - data: every write transaction holds it, transaction-scoped: shared by operations,
 *    exclusive by a restore (src/db/unit-of-work.ts). It dies with the transaction or its
 *    connection, so a crashed restore leaves nothing locked.
 *  - migration: held, session-scoped, by the one process applying migrations
 *    (src/db/migrate.ts) while others starting at the same time wait.
 *
 * Written into statement texts as decimal literals (constant texts, no parameters: the
 * data lock travels in the same simple query as BEGIN).
 */
type AdvisoryLockKey = bigint;

const DATA_LOCK: AdvisoryLockKey = 7_364_201_554n;
const MIGRATION_LOCK: AdvisoryLockKey = 7_364_201_553n;

/** The statement that takes the data lock for the rest of the transaction. */
export const pgDataLock = (mode: 'shared' | 'exclusive'): string =>
  mode === 'shared' ? `select pg_advisory_xact_lock_shared(${DATA_LOCK})` : `select pg_advisory_xact_lock(${DATA_LOCK})`;

/** Session-level: held until pgMigrationUnlock on the same connection, or until it closes. */
export const pgMigrationLock = `select pg_advisory_lock(${MIGRATION_LOCK})`;
export const pgMigrationUnlock = `select pg_advisory_unlock(${MIGRATION_LOCK})`;
