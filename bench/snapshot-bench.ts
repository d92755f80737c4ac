/**
 * Snapshot benchmark (issue 4, issue 14). ~250,000 business rows (10 configs, 10,000 nodes
 * each with an MQTT credential, ~100,000 link rows, 20,000 port-forward rules, 100,000
 * audit records; BENCH_SNAPSHOT_SCALE=4 gives ~840,000) exported and restored by meshq as
 * deployed (bench/support.ts startMeshq: `npm start` on SQLite, the API and a worker on
 * PostgreSQL), next to the database's own tools on the same rows in the same run:
 *   - export on PostgreSQL vs `pg_dump --data-only` of the business tables,
 *   - restore on PostgreSQL (replacing the rows, one transaction) vs loading that dump
 *     with `psql` into an emptied copy,
 *   - the same export and restore on SQLite, against the same PostgreSQL baselines,
 *   - the upload through the API (POST /snapshots/restore: spooled, checked in a worker
 *     thread, staged), with /healthz p99 and max while it runs and while the restore job
 *     runs, next to an idle /healthz probe of the same process just before,
 *   - the peak RSS above idle of the API and the worker processes (Linux /proc), over the
 *     check, both restores and the exports.
 * Restore timings are the job's own (processedOn..finishedOn: decrypt, validate, delete,
 * insert, commit), not queue latency. Exports, being cheap and harmless, are run
 * EXPORT_RUNS times, on PostgreSQL taking turns with pg_dump, and the medians compared:
 * a single export of under a second moved by a third from run to run on this machine.
 * BENCH_SNAPSHOT_DIALECTS=sqlite runs one dialect (without PostgreSQL, no baselines).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, openAsBlob, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { bootstrap, type AppContext } from '../src/bin/bootstrap.js';
import { connectOrm } from '../src/db/orm.js';
import { migrateUnderLock } from '../src/db/migrate.js';
import { createRepositories } from '../src/repositories/index.js';
import type { JobInput } from '../src/jobs/table.js';
import { freePort } from '../test/support/processes.js';
import { encodeTestSnapshot, generateBusinessTables, rowCount } from '../test/support/snapshot-data.js';
import { benchDatabase, dropRedisPrefix, idleProbes, probeDuring, processRss, quantile, record, seconds, startMeshq } from './support.js';

const run = promisify(execFile);
const ADMIN_PASSWORD = 'bench-admin-password';
const FILE_PASSWORD = 'bench-file-password';
const JOB_TIMEOUT_MS = 30 * 60_000;
const EXPORT_RUNS = Number(process.env.BENCH_EXPORT_RUNS ?? 3);
const DIALECTS = (process.env.BENCH_SNAPSHOT_DIALECTS ?? 'postgresql,sqlite').split(',');

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** The job's own duration in seconds, once it completed. */
async function jobSeconds<T extends 'snapshot.export' | 'snapshot.restore'>(app: AppContext, type: T, payload: JobInput<T>): Promise<{ s: number; result: unknown }> {
  const job = await app.queues.submit(type, payload, { actor: 'bench' });
  return finished(app, job.id!, type);
}

async function finished(app: AppContext, id: string, type: string): Promise<{ s: number; result: unknown; processedOn: number; finishedOn: number }> {
  const job = (await app.queues.find(id))!;
  const view = await app.queues.waitFor(job, JOB_TIMEOUT_MS);
  if (view.state !== 'completed') throw new Error(`${type} did not complete: ${JSON.stringify(view.error)}`);
  const done = (await app.queues.find(id))!;
  return { s: (done.finishedOn! - done.processedOn!) / 1000, result: done.returnvalue, processedOn: done.processedOn!, finishedOn: done.finishedOn! };
}

interface RestoreFigures {
  /** The upload request: sent, spooled, checked, staged, answered. */
  checkS: number;
  restoreS: number;
  /** /healthz latencies (ms) while the upload was checked, and while the restore job ran. */
  duringCheck: number[];
  duringRestore: number[];
}

/** What an administrator does: uploads the file to the API, then the worker restores it. */
async function restore(app: AppContext, base: string, path: string): Promise<RestoreFigures> {
  const healthz = `${base}/healthz`;
  const form = new FormData();
  form.set('password', FILE_PASSWORD);
  // A file-backed Blob: sent from the disk as it goes, as a client would.
  form.set('file', await openAsBlob(path), 'snapshot.meshq');
  // One prober from before the upload until the restore finished: the restore job starts
  // as soon as the upload is staged.
  let checkS = 0;
  let answered = 0;
  const { value, samples } = await probeDuring(healthz, async () => {
    const t0 = process.hrtime.bigint();
    const res = await fetch(`${base}/api/v1/snapshots/restore`, {
      method: 'POST',
      body: form,
      headers: { authorization: `Basic ${Buffer.from(`admin:${ADMIN_PASSWORD}`).toString('base64')}` },
    });
    const body = (await res.json()) as { id: string };
    if (res.status !== 202 && res.status !== 200) throw new Error(`upload answered ${res.status}: ${JSON.stringify(body)}`);
    checkS = seconds(t0);
    answered = Date.now();
    return finished(app, body.id, 'snapshot.restore');
  });
  const { processedOn, finishedOn } = value;
  return {
    checkS,
    restoreS: value.s,
    // The probes sent while the upload was sent, checked and staged.
    duringCheck: samples.filter((x) => x.at < answered).map((x) => x.ms),
    // Only the probes sent while the job ran.
    duringRestore: samples.filter((x) => x.at >= processedOn && x.at <= finishedOn).map((x) => x.ms),
  };
}

async function businessTableNames(app: AppContext): Promise<string[]> {
  return createRepositories(app.uow.fork(), { serverKey: app.serverKey }).snapshots.tableSpecs().map((s) => s.table);
}

async function counts(app: AppContext): Promise<Record<string, number>> {
  return createRepositories(app.uow.fork(), { serverKey: app.serverKey }).snapshots.businessRowCounts();
}

interface DialectFigures {
  exportS: number;
  restoreEmpty: RestoreFigures;
  restoreFull: RestoreFigures;
  fileBytes: number;
  idleHealthz: number[];
  /** Idle and peak RSS of the API process and of the worker process (the same one for `npm start`). */
  api: { idle: number; peak: number };
  worker: { idle: number; peak: number };
}

/**
 * The PostgreSQL baselines, on the rows the worker restored: `dump` is run once per export,
 * in turns with it, and returns its seconds; `load` once, after the last dump.
 */
interface Baseline {
  dump(app: AppContext, url: string): Promise<number>;
  load(): Promise<void>;
}

async function measure(dialect: 'postgresql' | 'sqlite', path: string, expected: number, baseline?: Baseline): Promise<DialectFigures & { dumpS?: number }> {
  const db = await benchDatabase(dialect, { ADMIN_PASSWORD });
  const app = await bootstrap('bench', db.config);
  const port = await freePort();
  const meshq = await startMeshq(db.config, port);
  const base = `http://127.0.0.1:${port}`;
  try {
    const [apiPid, workerPid = apiPid] = meshq.pids as [number, number?];
    const idleHealthz = await idleProbes(`${base}/healthz`);
    const apiIdle = processRss(apiPid!).rss;
    const workerIdle = processRss(workerPid!).rss;
    // Where the peaks come from: each process's high-water mark after each phase.
    const mark = (phase: string) =>
      console.error(`  ${dialect} peak RSS after ${phase}: ${meshq.pids.map((pid) => `${(processRss(pid).peak / 2 ** 20).toFixed(0)} MiB`).join(' / ')}`);
    mark('start');
    const restoreEmpty = await restore(app, base, path);
    mark('the first upload and restore');
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
    mark('the exports');
    console.error(`  ${dialect} export runs: ${exports.map((x) => x.toFixed(2)).join(' ')} s${baseline ? `; pg_dump runs: ${dumps.map((x) => x.toFixed(2)).join(' ')} s` : ''}`);
    const restoreFull = await restore(app, base, path);
    mark('the second upload and restore');
    await baseline?.load();
    return {
      exportS: median(exports),
      ...(baseline ? { dumpS: median(dumps) } : {}),
      restoreEmpty,
      restoreFull,
      fileBytes,
      idleHealthz,
      api: { idle: apiIdle, peak: processRss(apiPid!).peak },
      worker: { idle: workerIdle, peak: processRss(workerPid!).peak },
    };
  } finally {
    await meshq.stop();
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
    const path = join(tmp, 'upload.meshq');
    writeFileSync(path, file);
    const dump = join(tmp, 'business.sql');
    const pg = !DIALECTS.includes('postgresql') ? undefined : await measure('postgresql', path, rows, {
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
    pgDumpS = pg?.dumpS ?? 0;
    const lite = DIALECTS.includes('sqlite') ? await measure('sqlite', path, rows) : undefined;

    const perS = (s: number) => rows / s;
    record({ name: `snapshot rows`, value: rows, unit: 'rows' });
    if (pg) {
      record({ name: 'snapshot file (gzip + AES-GCM)', value: pg.fileBytes / 2 ** 20, unit: 'MiB', baseline: 'pg_dump SQL text', ratio: pg.fileBytes / dumpBytes });
      record({ name: `pg_dump --data-only (baseline, median of ${EXPORT_RUNS})`, value: pgDumpS, unit: 's' });
      record({ name: 'psql load of that dump (baseline)', value: psqlLoadS, unit: 's' });
      record({ name: `export, PostgreSQL (median of ${EXPORT_RUNS})`, value: pg.exportS, unit: 's', baseline: 'pg_dump', ratio: pg.exportS / pgDumpS, target: '<= 1.5' });
      record({ name: 'restore, PostgreSQL (replacing all rows)', value: pg.restoreFull.restoreS, unit: 's', baseline: 'psql load', ratio: pg.restoreFull.restoreS / psqlLoadS, target: '<= 1.5' });
      record({ name: 'restore, PostgreSQL (empty database)', value: pg.restoreEmpty.restoreS, unit: 's', baseline: 'psql load', ratio: pg.restoreEmpty.restoreS / psqlLoadS, target: '<= 1.5' });
      record({ name: 'restore rate, PostgreSQL', value: perS(pg.restoreFull.restoreS), unit: 'rows/s' });
    }
    if (lite) {
      // Without the PostgreSQL run there is no baseline to divide by.
      const against = (baseline: string, base: number, s: number) => (pg ? { baseline, ratio: s / base, target: '<= 1.5' } : {});
      record({ name: `export, SQLite (median of ${EXPORT_RUNS})`, value: lite.exportS, unit: 's', ...against('pg_dump', pgDumpS, lite.exportS) });
      record({ name: 'restore, SQLite (replacing all rows)', value: lite.restoreFull.restoreS, unit: 's', ...against('psql load', psqlLoadS, lite.restoreFull.restoreS) });
      record({ name: 'restore, SQLite (empty database)', value: lite.restoreEmpty.restoreS, unit: 's', ...against('psql load', psqlLoadS, lite.restoreEmpty.restoreS) });
    }
    const mib = (n: number) => n / 2 ** 20;
    for (const [name, f] of [
      ['PostgreSQL, api + worker', pg],
      ['SQLite, npm start', lite],
    ] as const) {
      if (!f) continue;
      record({ name: `upload to the API (send, spool, check, stage), ${name}`, value: f.restoreFull.checkS, unit: 's' });
      const idleP99 = quantile(f.idleHealthz, 0.99);
      const idleMax = Math.max(...f.idleHealthz);
      record({ name: `/healthz p99 idle, ${name}`, value: idleP99, unit: `ms (${f.idleHealthz.length} probes)` });
      // Both restores' probes: into the empty database and replacing every row.
      for (const [what, xs] of [
        ['upload check', [...f.restoreEmpty.duringCheck, ...f.restoreFull.duringCheck]],
        ['restore', [...f.restoreEmpty.duringRestore, ...f.restoreFull.duringRestore]],
      ] as const) {
        const probes = xs.length > 0 ? xs : [NaN];
        record({ name: `/healthz p99 during ${what}, ${name}`, value: quantile(probes, 0.99), unit: `ms (${xs.length} probes)`, baseline: 'idle p99', ratio: quantile(probes, 0.99) / idleP99, target: '<= 50 ms' });
        record({ name: `/healthz max during ${what}, ${name}`, value: Math.max(...probes), unit: 'ms', baseline: 'idle max', ratio: Math.max(...probes) / idleMax, target: '<= 250 ms' });
      }
      const oneProcess = f === lite;
      record({ name: `${oneProcess ? 'npm start process' : 'API'} peak RSS above idle, ${name}`, value: mib(f.api.peak - f.api.idle), unit: `MiB (idle ${mib(f.api.idle).toFixed(0)})`, target: '<= 256' });
      if (!oneProcess) record({ name: `worker peak RSS above idle, ${name}`, value: mib(f.worker.peak - f.worker.idle), unit: `MiB (idle ${mib(f.worker.idle).toFixed(0)})`, target: '<= 256' });
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
