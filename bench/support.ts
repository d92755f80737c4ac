/**
 * Benchmark plumbing: fresh databases and queue prefixes per run, timing, the table that
 * prints every figure next to the baseline measured in the same run, meshq started as
 * deployed, /healthz probes and processes' memory.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { probe, type ProbeSample } from './probe.js';
import pg from 'pg';
import type { AppContext } from '../src/bin/bootstrap.js';
import { loadConfig, type Config, type Dialect } from '../src/config.js';
import type { JobType } from '../src/jobs/table.js';
import { runJob } from '../src/jobs/runner.js';
import { freePort } from '../test/support/processes.js';

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

/**
 * A PostgreSQL CHECKPOINT: a timed part that writes a few hundred MB of WAL starts with the
 * whole of max_wal_size ahead of it, so that no checkpoint falls inside one part and not
 * inside the part it is compared with.
 */
export const checkpointPostgres = (): Promise<void> => adminSql('checkpoint');

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

/** /healthz probes: one request every PROBE_EVERY_MS; IDLE_PROBES of them make the idle baseline. */
export const PROBE_EVERY_MS = 10;
export const IDLE_PROBES = 300;

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export const quantile = (xs: readonly number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
};

/**
 * A prober process (probe-child.ts) requesting `url` every PROBE_EVERY_MS: latencies as a
 * client sees them, not counting this process's own pauses. Resolves once the prober has
 * warmed up; `samples` resolves when it has `count` of them, or once `stop` was called.
 */
async function startProber(url: string, opts: { count?: number; anyStatus?: boolean } = {}): Promise<{ samples: Promise<ProbeSample[]>; stop(): void }> {
  const child = fork(fileURLToPath(new URL('./probe-child.ts', import.meta.url)), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  let ready!: () => void;
  const started = new Promise<void>((resolve) => (ready = resolve));
  const samples = new Promise<ProbeSample[]>((resolve, reject) => {
    child.on('message', (m) => (m === 'ready' ? ready() : resolve(m as ProbeSample[])));
    child.once('exit', (code) => reject(new Error(`the prober of ${url} exited ${code}`)));
  });
  child.send({ url, everyMs: PROBE_EVERY_MS, ...opts });
  await Promise.race([started, samples]);
  // A prober that already failed has closed its channel: `samples` says so, not the send.
  return { samples, stop: () => void child.send('stop', () => undefined) };
}

/** IDLE_PROBES probes of an idle process: the baseline of the probes taken under load. */
export async function idleProbes(url: string): Promise<number[]> {
  const prober = await startProber(url, { count: IDLE_PROBES });
  return (await prober.samples).map((s) => s.ms);
}

/**
 * Runs `work` while a prober process requests `url` every PROBE_EVERY_MS (from before
 * `work` starts until it settles); returns its outcome and every probe with the time it
 * was sent (to keep only those inside a job's own run). `anyStatus` as probe() says.
 */
export async function probeDuring<T>(url: string, work: () => Promise<T>, opts: { anyStatus?: boolean } = {}): Promise<{ value: T; samples: ProbeSample[] }> {
  const prober = await startProber(url, opts);
  const settled = Promise.resolve().then(work);
  await settled.catch(() => undefined);
  prober.stop();
  const samples = await prober.samples;
  return { value: await settled, samples };
}

export interface Meshq {
  /** The processes' ids: the API first, then the worker (one process for `npm start`). */
  pids: number[];
  stop(): Promise<void>;
}

/**
 * The Node arguments of one of package.json's run scripts (`start`, `api`, `worker`):
 * `node <flags> dist/bin/<entry>.js`, without npm in between, as the image runs them.
 */
export function deployedArgs(script: 'start' | 'api' | 'worker'): string[] {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> };
  const [node, ...args] = pkg.scripts[script]!.split(/\s+/);
  if (node !== 'node') throw new Error(`package.json script ${script} does not start with node: ${pkg.scripts[script]}`);
  return args;
}

let built: Promise<void> | undefined;

/** Compiles src to dist once per bench run (`npm run build` without the type check), so the deployed code is this tree's. */
export function buildOnce(root: string): Promise<void> {
  return (built ??= new Promise<void>((done, fail) => {
    const build = spawn('npm', ['run', 'build', '--', '--noCheck'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
    build.once('error', fail);
    build.once('exit', (code) => (code === 0 ? done() : fail(new Error(`npm run build exited ${code}`))));
  }));
}

/**
 * meshq as deployed: `npm start` (SQLite: API and worker thread in one process) or the API
 * and a worker (PostgreSQL), each the compiled code with its script's Node flags
 * (deployedArgs): threads it starts (the worker thread, upload checks) load compiled code
 * too, as in production, not TypeScript through tsx.
 */
export async function startMeshq(config: Config, port: number, env: Record<string, string> = {}): Promise<Meshq> {
  const root = new URL('..', import.meta.url).pathname;
  const fullEnv = {
    ...process.env,
    DATABASE_URL: config.databaseUrl,
    REDIS_URL: config.redisUrl,
    SECRET_KEY: config.secretKey,
    QUEUE_PREFIX: config.queuePrefix,
    REDIS_DURABILITY: 'none',
    LOG_LEVEL: 'warn',
    // As the image sets it (README.md, "Processes").
    MALLOC_ARENA_MAX: '2',
    HOST: '127.0.0.1',
    PORT: String(port),
    WORKER_HTTP_PORT: String(await freePort()),
    ...env,
  };
  await buildOnce(root);
  const scripts = config.dialect === 'sqlite' ? (['start'] as const) : (['api', 'worker'] as const);
  const procs: ChildProcess[] = scripts.map((script) => spawn(process.execPath, deployedArgs(script), { cwd: root, env: fullEnv, stdio: ['ignore', 'inherit', 'inherit'] }));
  const stop = () =>
    Promise.all(
      procs.map(
        (p) =>
          new Promise<void>((done) => {
            if (p.exitCode !== null || p.signalCode !== null) return done();
            p.once('exit', () => done());
            p.kill('SIGTERM');
          }),
      ),
    ).then(() => undefined);
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (procs.some((p) => p.exitCode !== null)) {
      await stop();
      throw new Error('meshq exited during start-up');
    }
    if (await probe(`http://127.0.0.1:${port}/healthz`).then(() => true, () => false)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error('meshq did not answer /healthz within 120 s');
    }
    await sleep(200);
  }
  return { pids: procs.map((p) => p.pid!), stop };
}

/** A process's resident memory now and its peak so far, in bytes (Linux: /proc/<pid>/status). */
export function processRss(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kib('VmRSS'), peak: kib('VmHWM') };
}
