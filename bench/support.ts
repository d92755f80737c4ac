/**
 * Benchmark plumbing: fresh databases and queue prefixes per run, timing, and the table
 * that prints every figure next to the baseline measured in the same run.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { AppContext } from '../src/bin/bootstrap.js';
import { loadConfig, type Config, type Dialect } from '../src/config.js';
import type { JobType } from '../src/jobs/table.js';
import { runJob } from '../src/jobs/runner.js';

export const PG_ADMIN_URL = process.env.BENCH_PG_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';

/**
 * Runs jobs through the real runner (validation, transaction, audit, ledger) without
 * BullMQ: for seeding data, and for measuring the runner on its own.
 */
export function directRunner(app: Pick<AppContext, 'uow' | 'config' | 'log' | 'serverKey'>, actor = 'bench') {
  const deps = { uow: app.uow, config: app.config, log: app.log, serverKey: app.serverKey, enqueue: async () => undefined };
  return <R = { id: string }>(type: JobType, payload: unknown) =>
    runJob(deps, { jobId: randomUUID(), type, envelope: { actor, payload } }) as Promise<R>;
}

export interface BenchDb {
  config: Config;
  drop(): Promise<void>;
}

export async function benchDatabase(dialect: Dialect, overrides: Record<string, string> = {}): Promise<BenchDb> {
  const tag = randomBytes(4).toString('hex');
  const env: Record<string, string> = { REDIS_URL, SECRET_KEY: 'b'.repeat(64), LOG_LEVEL: 'silent', REDIS_DURABILITY: 'none', ...overrides };
  let drop: () => Promise<void>;
  if (dialect === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'meshq-bench-'));
    env.DATABASE_URL = `sqlite:${join(dir, 'bench.db')}`;
    drop = async () => rmSync(dir, { recursive: true, force: true });
  } else {
    const name = `meshq_bench_${tag}`;
    await adminSql(`create database ${name}`);
    env.DATABASE_URL = `postgres://postgres@127.0.0.1:5432/${name}`;
    drop = () => adminSql(`drop database if exists ${name} with (force)`);
  }
  return { config: loadConfig(env, { queuePrefix: `meshq-bench-${tag}` }), drop };
}

async function adminSql(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: PG_ADMIN_URL });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

export { deletePrefix as dropRedisPrefix } from '../test/support/redis.js';

export interface Row {
  name: string;
  value: number;
  unit: string;
  baseline?: string;
  ratio?: number;
  target?: string;
}

export const rows: Row[] = [];

export function record(row: Row): void {
  rows.push(row);
  const ratio = row.ratio === undefined ? '' : `  ratio ${row.ratio.toFixed(2)}`;
  console.error(`  ${row.name}: ${fmt(row.value)} ${row.unit}${ratio}`);
}

const fmt = (n: number) => (n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(2));

export function printTable(): void {
  const header = ['measure', 'value', 'unit', 'baseline (same run)', 'ratio', 'target'];
  const body = rows.map((r) => [r.name, fmt(r.value), r.unit, r.baseline ?? '', r.ratio === undefined ? '' : r.ratio.toFixed(2), r.target ?? '']);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => '| ' + cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ') + ' |';
  console.log(line(header));
  console.log('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|');
  for (const b of body) console.log(line(b));
}

export const seconds = (startNs: bigint) => Number(process.hrtime.bigint() - startNs) / 1e9;
