/**
 * The commands the deployment runs, run here as they are written: the Dockerfile's CMD
 * and compose's worker command, on code compiled from src/ the way `npm run build` does
 * it, in a folder laid out like the image's /app (dist/, package.json, node_modules).
 *
 * - SIGTERM (and a second one while shutting down) to that one process lets the job it is
 *   running finish, and the process exits 0.
 * - On a Node.js older than 24 every compiled entry stops at once with one line.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { bootstrap, type AppContext } from '../../src/bin/bootstrap.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { waitFor } from '../support/processes.js';
import { deletePrefix } from '../support/redis.js';

const root = resolve(import.meta.dirname, '../..');
const read = (file: string) => readFileSync(resolve(root, file), 'utf8');

/** The runtime stage's CMD (the last CMD of the Dockerfile), exec form. */
function dockerfileCommand(): string[] {
  const cmds = [...read('Dockerfile').matchAll(/^CMD\s+(\[.*\])\s*$/gm)];
  if (cmds.length === 0) throw new Error('Dockerfile has no exec-form CMD');
  return JSON.parse(cmds.at(-1)![1]!) as string[];
}

function composeCommand(service: string): string[] {
  const compose = parse(read('docker-compose.yml'), { merge: true }) as { services: Record<string, { command?: unknown }> };
  const command = compose.services[service]?.command;
  if (!Array.isArray(command)) throw new Error(`docker-compose.yml: ${service} has no exec-form command`);
  return command as string[];
}

/** A folder like the image's /app: dist compiled from src/ now, package.json, node_modules. */
let appDir: string;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  appDir = mkdtempSync(join(tmpdir(), 'meshq-image-'));
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  // The build's own configuration, into this folder. Types are the typecheck's business
  // (npm test runs it); --noCheck keeps this to the emit, as esbuild-free as the image.
  await run(process.execPath, [tsc, '-p', 'tsconfig.build.json', '--outDir', join(appDir, 'dist'), '--noCheck'], root);
  copyFileSync(resolve(root, 'package.json'), join(appDir, 'package.json'));
  symlinkSync(resolve(root, 'node_modules'), join(appDir, 'node_modules'), 'dir');
}, 240_000);

afterAll(async () => {
  await Promise.all(
    [...children].map(
      (c) =>
        new Promise<void>((done) => {
          if (c.exitCode !== null || c.signalCode !== null) return done();
          c.once('exit', () => done());
          c.kill('SIGKILL');
        }),
    ),
  );
  if (appDir) rmSync(appDir, { recursive: true, force: true });
});

function run(cmd: string, args: string[], cwd: string): Promise<void> {
  return new Promise((done, fail) => {
    const p = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('exit', (code) => (code === 0 ? done() : fail(new Error(`${cmd} ${args.join(' ')} exited ${code}:\n${out}`))));
  });
}

interface Started {
  proc: ChildProcess;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Runs argv as the container would: `node` is this Node (24), the working directory /app. */
function start(argv: string[], env: Record<string, string>, node = process.execPath): Started {
  expect(argv[0]).toBe('node');
  const proc = spawn(node, argv.slice(1), {
    cwd: appDir,
    env: { PATH: process.env.PATH!, HOME: process.env.HOME!, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(proc);
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) =>
    proc.on('exit', (code, signal) => {
      children.delete(proc);
      done({ code, signal });
    }),
  );
  return { proc, output: () => out, exited };
}

const NODES = 150;
const PAIRS = (NODES * (NODES - 1)) / 2;

describe.each([
  ['the Dockerfile CMD', dockerfileCommand],
  ["compose's worker command", () => composeCommand('worker')],
])('%s', (_what, command) => {
  let db: TestDatabase;
  let app: AppContext;

  afterAll(async () => {
    const prefix = app?.config.queuePrefix;
    await app?.close();
    if (prefix) await deletePrefix(prefix);
    await db?.drop();
  });

  it('finishes the job it is running on SIGTERM, ignores a second SIGTERM, and exits 0', async () => {
    db = await createTestDatabase('sqlite', 'sigterm');
    app = await bootstrap('test', db.config());
    const argv = command();
    const meshq = start(argv, {
      ...db.env,
      QUEUE_PREFIX: app.config.queuePrefix,
      HOST: '127.0.0.1',
      PORT: '0',
      LOG_LEVEL: 'info',
    });
    void meshq.exited.then(({ code }) => {
      if (code !== null && code !== 0) console.error(meshq.output());
    });

    const done = async (id: string) => (await app.queues.view((await app.queues.find(id))!)).state === 'completed';
    const config = await app.queues.submit('config.create', { name: 'big', subnet: '10.61.0.0/16' }, { actor: 'admin' });
    await waitFor('config.create (the process is up)', () => done(config.id!), 60_000);
    const configId = ((await app.queues.find(config.id!))!.returnvalue as { id: string }).id;
    let last = config;
    for (let i = 0; i < NODES; i++) last = await app.queues.submit('node.create', { configId, name: `n${i}`, kind: 'static' }, { actor: 'admin' });
    await waitFor('the nodes', () => done(last.id!), 60_000);

    // The job must still be running when the signals arrive, however fast it is: the test
    // holds SQLite's write lock (an exclusive write, as a restore would) until both were
    // sent; meanwhile the job waits for the lock without blocking meshq's event loop.
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const holding = app.uow.write(() => released, { exclusive: true });
    const mesh = await app.queues.submit('mesh.generate', { configId }, { actor: 'admin' });
    await waitFor('mesh.generate to be active', async () => (await app.queues.view((await app.queues.find(mesh.id!))!)).state === 'active', 60_000, 5);
    const signalledAt = Date.now();
    meshq.proc.kill('SIGTERM');
    await waitFor('the shutdown to begin', async () => meshq.output().includes('shutting down'), 10_000, 5);
    expect(meshq.proc.exitCode, 'still running after the first SIGTERM').toBeNull();
    meshq.proc.kill('SIGTERM');
    await waitFor('the second signal to be noticed', async () => meshq.output().includes('shutdown already under way'), 10_000, 5);
    release();
    await holding;

    const exit = await meshq.exited;
    expect(exit, meshq.output()).toEqual({ code: 0, signal: null });
    expect(meshq.output()).toContain('shutdown already under way');

    // The job was running when the signal came, and it finished: in the queue ...
    const job = (await app.queues.find(mesh.id!))!;
    expect(job.finishedOn, 'finished after SIGTERM').toBeGreaterThanOrEqual(signalledAt);
    const view = await app.queues.view(job);
    expect(view.state).toBe('completed');
    expect(view.result).toEqual({ created: PAIRS });
    const counts = await app.queues.queue('operations').getJobCounts('active', 'waiting');
    expect(counts).toEqual({ active: 0, waiting: 0 });
    // Delayed jobs may only be the workers' own schedules (retention), never this work.
    const delayed = await app.queues.queue('operations').getJobs(['delayed']);
    expect(delayed.map((j) => j.name).filter((n) => n !== 'retention.prune')).toEqual([]);
    // ... and in the database.
    const sqlite = new Database(app.config.sqlitePath!, { readonly: true });
    try {
      const record = sqlite.prepare('select type, result from job_record where job_id = ?').get(mesh.id) as { type: string; result: string };
      expect(record.type).toBe('mesh.generate');
      expect(JSON.parse(record.result)).toEqual({ created: PAIRS });
      const links = sqlite.prepare('select count(distinct link_group_id) as n from peer_link where config_id = ?').get(configId) as { n: number };
      expect(links.n).toBe(PAIRS);
    } finally {
      sqlite.close();
    }
  }, 180_000);
});

describe('on a Node.js older than 24', () => {
  // The machine's system Node (Debian's is 20); OLD_NODE names another one.
  const oldNode = process.env.OLD_NODE ?? '/usr/bin/node';

  it.each(['api', 'worker', 'both', 'migrate', 'admin', 'cli'])('dist/bin/%s.js stops at once with one line saying what to do', async (entry) => {
    expect(existsSync(oldNode), `${oldNode}: this test needs a Node.js older than 24 (set OLD_NODE)`).toBe(true);
    const version = execFileSync(oldNode, ['--version'], { encoding: 'utf8' }).trim();
    expect(Number(/^v(\d+)/.exec(version)?.[1]), `${oldNode} is ${version}; this test needs one older than 24 (set OLD_NODE)`).toBeLessThan(24);

    const argv = entry === 'both' ? dockerfileCommand() : entry === 'worker' ? composeCommand('worker') : ['node', `dist/bin/${entry}.js`];
    expect(argv.at(-1)).toBe(`dist/bin/${entry}.js`);
    const proc = start(argv, { DATABASE_URL: 'sqlite:./data/never.db', LOG_LEVEL: 'info' }, oldNode);
    let stdout = '';
    let stderr = '';
    proc.proc.stdout!.on('data', (d) => (stdout += d));
    proc.proc.stderr!.on('data', (d) => (stderr += d));
    const exit = await proc.exited;
    expect(exit).toEqual({ code: 1, signal: null });
    expect(stdout).toBe('');
    expect(stderr).toBe(
      `meshq: found Node.js ${version.slice(1)}, needs Node.js 24 or newer: run \`nvm install\` in the meshq folder (it reads .nvmrc), or see "Run it" in README.md\n`,
    );
    // Stopped before anything was loaded: no database file, no data folder.
    expect(existsSync(join(appDir, 'data'))).toBe(false);
  });
});
