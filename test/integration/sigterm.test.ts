/**
 * The commands the deployment runs, run here as they are written: the Dockerfile's CMD
 * and compose's worker command, on code compiled from src/ the way `npm run build` does
 * it, in a folder laid out like the image's /app (dist/, package.json, node_modules).
 *
 * - SIGTERM (and a second one while shutting down) to that one process lets the job it is
 *   running finish, and the process exits 0.
 * - On a Node.js older than 24 every compiled entry stops at once with one line.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { bootstrap, type AppContext } from '../../src/bin/bootstrap.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { configWithNodes, expectOperationsIdle, heldMeshGenerate } from '../support/long-job.js';
import { cleanEnv, killAll, root, runProcess, startProcess, waitFor, type Started } from '../support/processes.js';
import { closeAppAndDatabase } from '../support/stack.js';

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
  await killAll();
  if (appDir) rmSync(appDir, { recursive: true, force: true });
});

async function run(cmd: string, args: string[], cwd: string): Promise<void> {
  const r = await runProcess(cmd, args, { cwd, timeoutMs: 240_000 });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}:\n${r.out}`);
}

/** Runs argv as the container would: `node` is this Node (24), the working directory /app. */
function start(argv: string[], env: Record<string, string>, node = process.execPath): Started {
  expect(argv[0]).toBe('node');
  return startProcess(node, argv.slice(1), { cwd: appDir, env: cleanEnv(env) });
}

const NODES = 150;
const PAIRS = (NODES * (NODES - 1)) / 2;

describe.each([
  ['the Dockerfile CMD', dockerfileCommand],
  ["compose's worker command", () => composeCommand('worker')],
])('%s', (_what, command) => {
  let db: TestDatabase;
  let app: AppContext;

  afterAll(() => closeAppAndDatabase(app, db));

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

    const configId = await configWithNodes(app, '10.61.0.0/16', NODES);

    // The job must still be running when the signals arrive, however fast it is: the test
    // holds SQLite's write lock until both were sent; meanwhile the job waits for the lock
    // without blocking meshq's event loop.
    const { job: mesh, release } = await heldMeshGenerate(app, configId, 5);
    const signalledAt = Date.now();
    meshq.proc.kill('SIGTERM');
    await waitFor('the shutdown to begin', async () => meshq.output().includes('shutting down'), 10_000, 5);
    expect(meshq.proc.exitCode, 'still running after the first SIGTERM').toBeNull();
    meshq.proc.kill('SIGTERM');
    await waitFor('the second signal to be noticed', async () => meshq.output().includes('shutdown already under way'), 10_000, 5);
    await release();

    const exit = await meshq.exited;
    expect(exit, meshq.output()).toEqual({ code: 0, signal: null });
    expect(meshq.output()).toContain('shutdown already under way');

    // The job was running when the signal came, and it finished: in the queue ...
    const job = (await app.queues.find(mesh.id!))!;
    expect(job.finishedOn, 'finished after SIGTERM').toBeGreaterThanOrEqual(signalledAt);
    const view = await app.queues.view(job);
    expect(view.state).toBe('completed');
    expect(view.result).toEqual({ created: PAIRS });
    await expectOperationsIdle(app);
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
    const exit = await proc.exited;
    expect(exit).toEqual({ code: 1, signal: null });
    expect(proc.stdout()).toBe('');
    expect(proc.stderr()).toBe(
      `meshq: found Node.js ${version.slice(1)}, needs Node.js 24 or newer: run \`nvm install\` in the meshq folder (it reads .nvmrc), or see "Run it" in README.md\n`,
    );
    // Stopped before anything was loaded: no database file, no data folder.
    expect(existsSync(join(appDir, 'data'))).toBe(false);
  });
});
