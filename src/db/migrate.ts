/**
 * Applies pending migrations under a lock, so that several processes starting together
 * (docker compose --scale worker=4) do not race: one migrates, the others wait and then
 * find nothing pending. Both locks die with their holder, so a crash mid-migration
 * leaves nothing to clean up (the migration itself is one transaction).
 */
import Database from 'better-sqlite3';
import pg from 'pg';
import type { Config } from '../config.js';
import { pgMigrationLock, pgMigrationUnlock } from './locks.js';
import type { Orm } from './orm.js';

const POLL_MS = 50;

interface MigrationOutcome {
  applied: string[];
  schemaVersion: string | undefined;
}

export async function migrateUnderLock(
  orm: Orm,
  config: Pick<Config, 'dialect' | 'databaseUrl' | 'sqlitePath'>,
): Promise<MigrationOutcome> {
  const release = config.dialect === 'postgresql' ? await lockPostgres(config.databaseUrl) : await lockSqlite(config.sqlitePath!);
  try {
    const applied = await orm.migrator.up();
    return { applied: applied.map((m) => m.name), schemaVersion: await currentSchemaVersion(orm) };
  } finally {
    await release();
  }
}

async function currentSchemaVersion(orm: Orm): Promise<string | undefined> {
  const executed = await orm.migrator.getExecuted();
  return executed.at(-1)?.name;
}

export async function pendingMigrations(orm: Orm): Promise<string[]> {
  return (await orm.migrator.getPending()).map((m) => m.name);
}

async function lockPostgres(url: string): Promise<() => Promise<void>> {
  // A session-level advisory lock on a connection of its own: the ORM's pool may run
  // the migration on any connection, and the lock must be held across all of them.
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query(pgMigrationLock);
  return async () => {
    try {
      await client.query(pgMigrationUnlock);
    } finally {
      await client.end();
    }
  };
}

/**
 * SQLite: an exclusive transaction on a side file. Not on the database file itself,
 * because SQLite locks per connection and the migrator writes through the ORM's own
 * connection. Polled with busy_timeout 0 so the event loop never blocks waiting.
 */
async function lockSqlite(dbPath: string): Promise<() => Promise<void>> {
  const lock = new Database(`${dbPath}.migrate-lock`, { timeout: 0 });
  for (;;) {
    try {
      lock.exec('BEGIN EXCLUSIVE');
      break;
    } catch (err) {
      if ((err as { code?: string }).code !== 'SQLITE_BUSY') {
        lock.close();
        throw err;
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }
  return async () => {
    lock.exec('ROLLBACK');
    lock.close();
  };
}
