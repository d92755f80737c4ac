/**
 * Scale benchmark (`npm run bench scale`): a 1,000-node mesh (BENCH_SCALE_NODES), built
 * by a real meshq process, on SQLite (`npm start`: the compiled both entry, API and worker thread
 * in one process) and PostgreSQL (the API and the worker as two processes).
 *   - mesh.generate's own duration (processedOn..finishedOn), every pair of 1,000
 *     dynamic nodes, next to the baseline: psql loading a `pg_dump --data-only` of the
 *     same link rows into a copy that has the same nodes, and PostgreSQL's own
 *     INSERT ... SELECT of those rows, in one transaction, into the same copy (same
 *     indexes and reference checks) from a table that already holds them: the floor of
 *     any statement that writes them;
 *   - /healthz latency (p99 and max) while that job runs, next to the same probe on the
 *     idle process just before;
 *   - on SQLite, /healthz and /readyz latency while a second process holds the file's
 *     write lock (BEGIN IMMEDIATE) for 8 s, next to the same idle probe.
 * Nodes are created through the real runner in this process (node.create: keys, MQTT
 * credentials), before the meshq process starts. On PostgreSQL each timed part (the job,
 * the psql load, the INSERT) starts after a CHECKPOINT (checkpointPostgres).
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { bootstrap, type AppContext } from '../src/bin/bootstrap.js';
import { connectOrm } from '../src/db/orm.js';
import { migrateUnderLock } from '../src/db/migrate.js';
import { freePort } from '../test/support/processes.js';
import { benchDatabase, checkpointPostgres, directRunner, dropRedisPrefix, idleProbes, probeDuring, quantile, record, seconds, startMeshq } from './support.js';
import type { ProbeSample } from './probe.js';

const run = promisify(execFile);
const root = resolve(import.meta.dirname, '..');
const NODES = Number(process.env.BENCH_SCALE_NODES ?? 1000);
const PAIRS = (NODES * (NODES - 1)) / 2;
const JOB_TIMEOUT_MS = 10 * 60_000;

const LOCK_HOLD_MS = 8_000;

/**
 * A second process holding the SQLite file's write lock: it takes BEGIN IMMEDIATE, says
 * so on stdout, holds the lock LOCK_HOLD_MS and rolls back. Resolves once it holds the
 * lock, with the promise of its exit.
 */
function holdSqliteWriteLock(file: string): Promise<{ exited: Promise<void> }> {
  const code = `
    const db = new (require('better-sqlite3'))(process.argv[1]);
    db.exec('begin immediate');
    process.stdout.write('locked\\n');
    setTimeout(() => { db.exec('rollback'); db.close(); }, Number(process.argv[2]));
  `;
  const child = spawn(process.execPath, ['-e', code, file, String(LOCK_HOLD_MS)], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((done, fail) =>
    child.once('exit', (status) => (status === 0 ? done() : fail(new Error(`lock holder exited with ${status}`)))),
  );
  return new Promise((done, fail) => {
    child.stdout.once('data', () => done({ exited }));
    exited.then(() => fail(new Error('lock holder exited before taking the lock')), fail);
  });
}

/**
 * /healthz and /readyz, each probed by a prober process of its own (a slow /readyz must not
 * thin out the /healthz samples), while another process holds the SQLite write lock: the
 * probes sent from the moment it holds the lock until it has let go and exited.
 */
async function probeUnderWriteLock(base: string, file: string): Promise<{ healthz: number[]; readyz: number[] }> {
  let lockedAt = 0;
  let releasedAt = 0;
  const underLock = async () => {
    const holder = await holdSqliteWriteLock(file);
    lockedAt = Date.now();
    await holder.exited;
    releasedAt = Date.now();
  };
  const { value: readyz, samples: healthz } = await probeDuring(`${base}/healthz`, async () => (await probeDuring(`${base}/readyz`, underLock, { anyStatus: true })).samples);
  const held = (samples: ProbeSample[]) => samples.filter((s) => s.at >= lockedAt && s.at <= releasedAt).map((s) => s.ms);
  return { healthz: held(healthz), readyz: held(readyz) };
}

async function seedNodes(app: AppContext): Promise<string> {
  const runJob = directRunner(app);
  const { id: configId } = await runJob('config.create', { name: 'scale', subnet: '10.80.0.0/16' });
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < NODES; i++) await runJob('node.create', { configId, name: `n${i}`, kind: 'dynamic' });
  console.error(`  ${NODES} dynamic nodes created in ${seconds(t0).toFixed(1)} s`);
  return configId;
}

interface Figures {
  generateS: number;
  idle: number[];
  during: number[];
  /** SQLite: probes while a second process holds the write lock. */
  locked?: { healthz: number[]; readyz: number[] };
}

async function measure(dialect: 'sqlite' | 'postgresql', baseline?: (app: AppContext, url: string) => Promise<void>): Promise<Figures> {
  const db = await benchDatabase(dialect);
  const app = await bootstrap('bench', db.config);
  try {
    console.error(`scale, ${dialect}: seeding`);
    const configId = await seedNodes(app);
    const port = await freePort();
    const meshq = await startMeshq(db.config, port);
    try {
      const healthz = `http://127.0.0.1:${port}/healthz`;
      if (dialect === 'postgresql') await checkpointPostgres();
      const idle = await idleProbes(healthz);
      const during: number[] = [];
      const {
        value: { job, view },
        samples,
      } = await probeDuring(healthz, async () => {
        const job = await app.queues.submit('mesh.generate', { configId }, { actor: 'bench' });
        return { job, view: await app.queues.waitFor(job, JOB_TIMEOUT_MS) };
      });
      if (view.state !== 'completed') throw new Error(`mesh.generate did not complete: ${JSON.stringify(view.error)}`);
      const finished = (await app.queues.find(job.id!))!;
      const created = (finished.returnvalue as { created: number }).created;
      if (created !== PAIRS) throw new Error(`mesh.generate created ${created} pairs, expected ${PAIRS}`);
      // Only the probes sent while the job ran.
      for (const s of samples) if (s.at >= finished.processedOn! && s.at <= finished.finishedOn!) during.push(s.ms);
      const generateS = (finished.finishedOn! - finished.processedOn!) / 1000;
      console.error(`  mesh.generate ${generateS.toFixed(2)} s; /healthz probes idle ${idle.length}, during ${during.length}`);
      await baseline?.(app, db.config.databaseUrl);
      const locked = db.config.sqlitePath === undefined ? undefined : await probeUnderWriteLock(`http://127.0.0.1:${port}`, db.config.sqlitePath);
      return { generateS, idle, during: during.length ? during : [NaN], ...(locked ? { locked } : {}) };
    } finally {
      await meshq.stop();
    }
  } finally {
    await app.close();
    await dropRedisPrefix(db.config.queuePrefix);
    await db.drop();
  }
}

export async function benchScale(): Promise<void> {
  const tmp = mkdtempSync(join(tmpdir(), 'meshq-scalebench-'));
  let psqlLoadS = NaN;
  let insertSelectS = NaN;
  try {
    const pg = await measure('postgresql', async (_app, url) => {
      // The database's own tools on the same rows: the nodes (and their config) are loaded
      // into an emptied copy first, untimed; then the link rows, timed, as psql loads a dump.
      const nodesDump = join(tmp, 'nodes.sql');
      const linksDump = join(tmp, 'links.sql');
      const dump = (file: string, tables: string[]) =>
        run('pg_dump', ['--data-only', '--no-owner', ...tables.map((t) => `--table=public.${t}`), '--file', file, url], { maxBuffer: 1 << 26 });
      await dump(nodesDump, ['mesh_config', 'node']);
      await dump(linksDump, ['peer_link']);
      const copy = await benchDatabase('postgresql');
      try {
        const orm = await connectOrm(copy.config);
        await migrateUnderLock(orm, copy.config);
        await orm.close(true);
        const psql = (file: string) => run('psql', ['--quiet', '--no-psqlrc', '-v', 'ON_ERROR_STOP=1', '--single-transaction', '--file', file, copy.config.databaseUrl], { maxBuffer: 1 << 26 });
        await psql(nodesDump);
        await checkpointPostgres();
        const t0 = process.hrtime.bigint();
        await psql(linksDump);
        psqlLoadS = seconds(t0);
        const insertFile = join(tmp, 'insert.sql');
        writeFileSync(join(tmp, 'keep.sql'), 'create unlogged table bench_link_rows as select * from peer_link; truncate peer_link;');
        writeFileSync(insertFile, 'insert into peer_link select * from bench_link_rows;');
        await psql(join(tmp, 'keep.sql'));
        await checkpointPostgres();
        const t1 = process.hrtime.bigint();
        await psql(insertFile);
        insertSelectS = seconds(t1);
      } finally {
        await copy.drop();
      }
    });
    const lite = await measure('sqlite');

    const ms = (xs: number[], q: number) => quantile(xs, q);
    record({ name: `mesh nodes (dynamic) / pairs / link rows`, value: NODES, unit: `nodes; ${PAIRS} pairs, ${PAIRS * 2} rows` });
    record({ name: 'psql load of pg_dump --data-only of the link rows (baseline)', value: psqlLoadS, unit: 's' });
    record({ name: 'INSERT ... SELECT of the same link rows from a table (baseline)', value: insertSelectS, unit: 's' });
    record({ name: 'mesh.generate, PostgreSQL (api + worker)', value: pg.generateS, unit: 's', baseline: 'psql load', ratio: pg.generateS / psqlLoadS, target: '<= 5 s' });
    record({ name: 'mesh.generate, PostgreSQL, against INSERT ... SELECT', value: pg.generateS, unit: 's', baseline: 'INSERT ... SELECT', ratio: pg.generateS / insertSelectS });
    record({ name: 'mesh.generate, SQLite (npm start)', value: lite.generateS, unit: 's', baseline: 'psql load', ratio: lite.generateS / psqlLoadS, target: '<= 5 s' });
    for (const [name, f] of [
      ['PostgreSQL, api + worker', pg],
      ['SQLite, npm start', lite],
    ] as const) {
      record({ name: `/healthz p99 idle, ${name}`, value: ms(f.idle, 0.99), unit: 'ms' });
      record({ name: `/healthz p99 during mesh.generate, ${name}`, value: ms(f.during, 0.99), unit: 'ms', baseline: 'idle p99', ratio: ms(f.during, 0.99) / ms(f.idle, 0.99), target: '<= 50 ms' });
      record({ name: `/healthz max during mesh.generate, ${name}`, value: Math.max(...f.during), unit: 'ms', baseline: 'idle max', ratio: Math.max(...f.during) / Math.max(...f.idle), target: '<= 250 ms' });
    }
    if (lite.locked) {
      const idleMax = Math.max(...lite.idle);
      for (const [path, xs] of Object.entries(lite.locked)) {
        const name = `/${path} max, SQLite with a second process holding the write lock ${LOCK_HOLD_MS / 1000} s (npm start)`;
        record({ name, value: Math.max(...xs), unit: `ms (${xs.length} probes)`, baseline: '/healthz idle max', ratio: Math.max(...xs) / idleMax, target: '<= 250 ms' });
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
