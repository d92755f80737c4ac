/**
 * Snapshot benchmark (issue 4). ~250,000 business rows (10 configs, 10,000 nodes each
 * with an MQTT credential, ~100,000 link rows, 20,000 port-forward rules, 100,000 audit
 * records) exported and restored by a real worker process, next to the database's own
 * tools on the same rows in the same run:
 *   - export on PostgreSQL vs `pg_dump --data-only` of the business tables,
 *   - restore on PostgreSQL (replacing 250,000 rows, one transaction) vs loading that dump
 *     with `psql` into an emptied copy,
 *   - the same export and restore on SQLite, against the same PostgreSQL baselines,
 *   - the API's check of an upload (decrypt, decompress, parse, upgrade, validate),
 *   - the worker's peak RSS over export and both restores.
 * Restore timings are the job's own (processedOn..finishedOn: decrypt, validate, delete,
 * insert, commit), not queue latency. Exports, being cheap and harmless, are run
 * EXPORT_RUNS times, on PostgreSQL taking turns with pg_dump, and the medians compared:
 * a single export of under a second moved by a third from run to run on this machine.
 */
import { execFile } from 'node:child_process';
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { bootstrap, type AppContext } from '../src/bin/bootstrap.js';
import type { Config } from '../src/config.js';
import { connectOrm } from '../src/db/orm.js';
import { migrateUnderLock } from '../src/db/migrate.js';
import { createRepositories } from '../src/repositories/index.js';
import { stageUpload } from '../src/jobs/processors/snapshots.js';
import type { JobInput } from '../src/jobs/table.js';
import { openUpload } from '../src/snapshots/restore.js';
import { piecesOf } from '../test/support/snapshot-bytes.js';
import { encodeTestSnapshot, generateBusinessTables, rowCount } from '../test/support/snapshot-data.js';
import { benchDatabase, dropRedisPrefix, record, seconds } from './support.js';

const run = promisify(execFile);
const ADMIN_PASSWORD = 'bench-admin-password';
const FILE_PASSWORD = 'bench-file-password';
const JOB_TIMEOUT_MS = 30 * 60_000;
const EXPORT_RUNS = Number(process.env.BENCH_EXPORT_RUNS ?? 3);

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface Worker {
  /** RSS once started, before any snapshot work. */
  idleRss: number;
  maxRss(): Promise<number>;
  stop(): Promise<void>;
}

async function startWorker(config: Config): Promise<Worker> {
  const script = fileURLToPath(new URL('./snapshot-worker-child.ts', import.meta.url));
  const child: ChildProcess = fork(script, [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, DATABASE_URL: config.databaseUrl, REDIS_URL: config.redisUrl, SECRET_KEY: config.secretKey, LOG_LEVEL: 'warn', REDIS_DURABILITY: 'none', BENCH_QUEUE_PREFIX: config.queuePrefix },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  await new Promise<void>((resolve, reject) => {
    child.once('message', () => resolve());
    child.once('exit', (code) => reject(new Error(`bench worker exited (${code}) before it was ready`)));
  });
  const idleRss = await new Promise<number>((resolve) => {
    child.once('message', (m) => resolve((m as { rss: number }).rss));
    child.send('rss');
  });
  return {
    idleRss,
    maxRss: () =>
      new Promise((resolve) => {
        child.once('message', (m) => resolve((m as { maxRss: number }).maxRss));
        child.send('rss');
      }),
    stop: () =>
      new Promise((resolve) => {
        child.once('exit', () => resolve());
        child.send('stop');
      }),
  };
}

/** The job's own duration in seconds, once it completed. */
async function jobSeconds<T extends 'snapshot.export' | 'snapshot.restore'>(app: AppContext, type: T, payload: JobInput<T>): Promise<{ s: number; result: unknown }> {
  const job = await app.queues.submit(type, payload, { actor: 'bench' });
  const view = await app.queues.waitFor(job, JOB_TIMEOUT_MS);
  if (view.state !== 'completed') throw new Error(`${type} did not complete: ${JSON.stringify(view.error)}`);
  const done = (await app.queues.find(job.id!))!;
  return { s: (done.finishedOn! - done.processedOn!) / 1000, result: done.returnvalue };
}

/** What the API does with an upload, then the job. */
async function restore(app: AppContext, file: Buffer): Promise<{ checkS: number; restoreS: number }> {
  const repos = createRepositories(app.uow.fork(), { serverKey: app.serverKey });
  const t0 = process.hrtime.bigint();
  const prepared = await openUpload(file, FILE_PASSWORD, repos.snapshots.tableSpecs(), app.serverKey);
  const checkS = seconds(t0);
  const staged = await stageUpload(app, piecesOf(file), prepared);
  const { s } = await jobSeconds(app, 'snapshot.restore', { stagedId: staged.id });
  return { checkS, restoreS: s };
}

async function businessTableNames(app: AppContext): Promise<string[]> {
  return createRepositories(app.uow.fork(), { serverKey: app.serverKey }).snapshots.tableSpecs().map((s) => s.table);
}

async function counts(app: AppContext): Promise<Record<string, number>> {
  return createRepositories(app.uow.fork(), { serverKey: app.serverKey }).snapshots.businessRowCounts();
}

interface DialectFigures {
  exportS: number;
  restoreEmptyS: number;
  restoreS: number;
  checkS: number;
  fileBytes: number;
  idleRss: number;
  maxRss: number;
}

/**
 * The PostgreSQL baselines, on the rows the worker restored: `dump` is run once per export,
 * in turns with it, and returns its seconds; `load` once, after the last dump.
 */
interface Baseline {
  dump(app: AppContext, url: string): Promise<number>;
  load(): Promise<void>;
}

async function measure(dialect: 'postgresql' | 'sqlite', file: Buffer, expected: number, baseline?: Baseline): Promise<DialectFigures & { dumpS?: number }> {
  const db = await benchDatabase(dialect, { ADMIN_PASSWORD });
  const app = await bootstrap('bench', db.config);
  const worker = await startWorker(db.config);
  try {
    const empty = await restore(app, file);
    const total = Object.values(await counts(app)).reduce((a, b) => a + b, 0);
    if (total !== expected) throw new Error(`${dialect}: restored ${total} rows, expected ${expected}`);
    const exports: number[] = [];
    const dumps: number[] = [];
    let fileBytes = 0;
    for (let i = 0; i < EXPORT_RUNS; i++) {
      const exported = await jobSeconds(app, 'snapshot.export', {});
      exports.push(exported.s);
      fileBytes = (exported.result as { size: number }).size;
      if (baseline) dumps.push(await baseline.dump(app, db.config.databaseUrl));
    }
    console.error(`  ${dialect} export runs: ${exports.map((x) => x.toFixed(2)).join(' ')} s${baseline ? `; pg_dump runs: ${dumps.map((x) => x.toFixed(2)).join(' ')} s` : ''}`);
    const replace = await restore(app, file);
    await baseline?.load();
    return {
      exportS: median(exports),
      ...(baseline ? { dumpS: median(dumps) } : {}),
      restoreEmptyS: empty.restoreS,
      restoreS: replace.restoreS,
      checkS: replace.checkS,
      fileBytes,
      idleRss: worker.idleRss,
      maxRss: await worker.maxRss(),
    };
  } finally {
    await worker.stop();
    await app.close();
    await dropRedisPrefix(db.config.queuePrefix);
    await db.drop();
  }
}

export async function benchSnapshots(): Promise<void> {
  console.error('snapshots: generating rows');
  // Node keys sealed under the benchmark databases' SECRET_KEY (bench/support.ts), as restore checks.
  const serverKey = Buffer.from('b'.repeat(64), 'hex');
  // BENCH_SNAPSHOT_SCALE=4 gives ~1,000,000 rows (links and audit records grow with it).
  const scale = Number(process.env.BENCH_SNAPSHOT_SCALE ?? 1);
  const tables = generateBusinessTables({
    configs: 10,
    nodesPerConfig: 1000,
    neighbours: Math.round(5 * scale),
    forwardsPerNode: 2,
    audit: Math.round(100_000 * scale),
    settings: 20,
    tokens: 20,
    staticEvery: 0,
    label: 'bench',
    serverKey,
  });
  // API tokens in the file (as older files carry them) are ignored by a restore.
  const rows = rowCount(tables) - (tables.api_token?.length ?? 0);
  const file = await encodeTestSnapshot(tables, FILE_PASSWORD);
  console.error(`snapshots: ${rows.toLocaleString('en-US')} rows, file ${(file.length / 2 ** 20).toFixed(1)} MiB`);

  let pgDumpS = 0;
  let psqlLoadS = 0;
  let dumpBytes = 0;
  const tmp = mkdtempSync(join(tmpdir(), 'meshq-snapbench-'));
  try {
    const dump = join(tmp, 'business.sql');
    const pg = await measure('postgresql', file, rows, {
      // The baseline on the same rows: the database's own data-only dump and load.
      async dump(app, url) {
        const tablesArgs = (await businessTableNames(app)).map((t) => `--table=public.${t}`);
        const t0 = process.hrtime.bigint();
        await run('pg_dump', ['--data-only', '--no-owner', ...tablesArgs, '--file', dump, url], { maxBuffer: 1 << 26 });
        return seconds(t0);
      },
      async load() {
        dumpBytes = statSync(dump).size;
        const copy = await benchDatabase('postgresql');
        try {
          const orm = await connectOrm(copy.config);
          await migrateUnderLock(orm, copy.config); // an emptied copy: the schema, no rows
          await orm.close(true);
          const t0 = process.hrtime.bigint();
          await run('psql', ['--quiet', '--no-psqlrc', '-v', 'ON_ERROR_STOP=1', '--single-transaction', '--file', dump, copy.config.databaseUrl], { maxBuffer: 1 << 26 });
          psqlLoadS = seconds(t0);
        } finally {
          await copy.drop();
        }
      },
    });
    pgDumpS = pg.dumpS!;
    const lite = await measure('sqlite', file, rows);

    const perS = (s: number) => rows / s;
    record({ name: `snapshot rows`, value: rows, unit: 'rows' });
    record({ name: 'snapshot file (gzip + AES-GCM)', value: pg.fileBytes / 2 ** 20, unit: 'MiB', baseline: 'pg_dump SQL text', ratio: pg.fileBytes / dumpBytes });
    record({ name: `pg_dump --data-only (baseline, median of ${EXPORT_RUNS})`, value: pgDumpS, unit: 's' });
    record({ name: 'psql load of that dump (baseline)', value: psqlLoadS, unit: 's' });
    record({ name: `export, PostgreSQL (median of ${EXPORT_RUNS})`, value: pg.exportS, unit: 's', baseline: 'pg_dump', ratio: pg.exportS / pgDumpS, target: '<= 1.5' });
    record({ name: 'restore, PostgreSQL (replacing all rows)', value: pg.restoreS, unit: 's', baseline: 'psql load', ratio: pg.restoreS / psqlLoadS, target: '<= 1.5' });
    record({ name: 'restore, PostgreSQL (empty database)', value: pg.restoreEmptyS, unit: 's', baseline: 'psql load', ratio: pg.restoreEmptyS / psqlLoadS, target: '<= 1.5' });
    record({ name: 'restore rate, PostgreSQL', value: perS(pg.restoreS), unit: 'rows/s' });
    record({ name: `export, SQLite (median of ${EXPORT_RUNS})`, value: lite.exportS, unit: 's', baseline: 'pg_dump', ratio: lite.exportS / pgDumpS, target: '<= 1.5' });
    record({ name: 'restore, SQLite (replacing all rows)', value: lite.restoreS, unit: 's', baseline: 'psql load', ratio: lite.restoreS / psqlLoadS, target: '<= 1.5' });
    record({ name: 'restore, SQLite (empty database)', value: lite.restoreEmptyS, unit: 's', baseline: 'psql load', ratio: lite.restoreEmptyS / psqlLoadS, target: '<= 1.5' });
    record({ name: 'upload check in the API (decrypt, parse, validate)', value: pg.checkS, unit: 's' });
    record({ name: 'worker peak RSS, PostgreSQL', value: pg.maxRss / 2 ** 20, unit: 'MiB', baseline: 'idle worker', ratio: pg.maxRss / pg.idleRss });
    record({ name: 'worker peak RSS, SQLite', value: lite.maxRss / 2 ** 20, unit: 'MiB', baseline: 'idle worker', ratio: lite.maxRss / lite.idleRss });
    record({ name: 'worker peak RSS above idle, PostgreSQL (export + restores)', value: (pg.maxRss - pg.idleRss) / 2 ** 20, unit: 'MiB', target: '<= 256' });
    record({ name: 'worker peak RSS above idle, SQLite (export + restores)', value: (lite.maxRss - lite.idleRss) / 2 ** 20, unit: 'MiB', target: '<= 256' });
    record({ name: 'worker RSS when idle, PostgreSQL', value: pg.idleRss / 2 ** 20, unit: 'MiB' });
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
