/**
 * Each test file gets its own database: a fresh SQLite file in a temp folder, or a
 * fresh PostgreSQL database created here and dropped (WITH FORCE) afterwards.
 * PostgreSQL must be running: a missing server fails the test loudly, never skips it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { loadConfig, type Config, type Dialect } from '../../src/config.js';

export const PG_ADMIN_URL = 'postgres://postgres@127.0.0.1:5432/postgres';
export const REDIS_URL = 'redis://127.0.0.1:6379';
export const DIALECTS: Dialect[] = ['sqlite', 'postgresql'];
export const TEST_SECRET_KEY = 'a'.repeat(64);

export interface TestDatabase {
  dialect: Dialect;
  url: string;
  /** Environment for child processes and loadConfig. */
  env: Record<string, string>;
  config(extra?: Record<string, string>): Config;
  drop(): Promise<void>;
}

export async function createTestDatabase(dialect: Dialect, label: string): Promise<TestDatabase> {
  const suffix = `${label.replace(/[^a-z0-9]/gi, '_').toLowerCase()}_${randomBytes(4).toString('hex')}`;
  let url: string;
  let drop: () => Promise<void>;
  if (dialect === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), `meshq-${suffix}-`));
    url = `sqlite:${join(dir, 'meshq.db')}`;
    drop = async () => rmSync(dir, { recursive: true, force: true });
  } else {
    const name = `meshq_t_${suffix}`.slice(0, 63);
    await adminQuery(`create database "${name}"`);
    url = `postgres://postgres@127.0.0.1:5432/${name}`;
    drop = async () => {
      await adminQuery(`drop database if exists "${name}" with (force)`);
    };
  }
  const env = testEnv(url);
  return {
    dialect,
    url,
    env,
    config: (extra = {}) => loadConfig({ ...env, ...extra }, { queuePrefix: `meshq-test-${suffix}` }),
    drop,
  };
}

/** A test's environment for a meshq on the given database, the shared Redis and the test key. */
export const testEnv = (databaseUrl: string): Record<string, string> => ({
  DATABASE_URL: databaseUrl,
  REDIS_URL,
  SECRET_KEY: TEST_SECRET_KEY,
  LOG_LEVEL: 'silent',
  DB_CONNECT_TIMEOUT_MS: '5000',
  // The shared test Redis runs without AOF: every test stack says it knows.
  REDIS_DURABILITY: 'none',
  // Worker processes started by tests each take a free port for their health and metrics.
  WORKER_HTTP_PORT: '0',
});

export async function adminQuery(sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL });
  await client.connect();
  try {
    return await client.query(sql, params);
  } finally {
    await client.end();
  }
}
