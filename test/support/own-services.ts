/**
 * Redis and PostgreSQL instances a test starts itself, on free ports in temp folders, to
 * stop, freeze (SIGSTOP) and restart them: never the shared services. Every instance
 * started here is killed in `stopOwnServices()` (each test file calls it in afterAll),
 * and only by the pids this module started.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { exited, freePort, waitFor } from './processes.js';

const running = new Set<ChildProcess>();
const folders: string[] = [];

/**
 * Starts a program as one of this module's own instances: tracked, so that
 * `stopOwnServices()` kills it by its pid (test/support/sentinels.ts starts its Redis
 * nodes and sentinels this way).
 */
export function spawnOwn(cmd: string, args: string[]): ChildProcess {
  const p = spawn(cmd, args, { stdio: 'ignore' });
  running.add(p);
  void exited(p).then(() => running.delete(p));
  return p;
}

/** A temp folder of this module's own, removed by `stopOwnServices()`. */
export function ownFolder(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  folders.push(dir);
  return dir;
}

/** Ends one instance of a service (SIGTERM or SIGINT: each one's own clean shutdown) and waits for it. */
async function stopOwn(proc: ChildProcess | undefined, signal: NodeJS.Signals): Promise<void> {
  if (!proc) return;
  proc.kill(signal);
  await exited(proc);
}

export interface OwnRedis {
  url: string;
  port: number;
  /** Stops it (SIGTERM: an AOF Redis writes its file first). */
  stop(): Promise<void>;
  /** Starts it again on the same port and folder (an AOF Redis reloads its jobs). */
  start(): Promise<void>;
}

export async function startOwnRedis(opts: { aof: boolean }): Promise<OwnRedis> {
  const port = await freePort();
  const dir = ownFolder('meshq-own-redis-');
  const url = `redis://127.0.0.1:${port}`;
  let proc: ChildProcess | undefined;
  const start = async () => {
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', opts.aof ? 'yes' : 'no', '--dir', dir, '--daemonize', 'no'];
    proc = spawnOwn('redis-server', args);
    await waitFor(`redis on ${port}`, async () => {
      const r = new Redis(url, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
      r.on('error', () => undefined);
      try {
        await r.connect();
        return (await r.ping()) === 'PONG';
      } catch {
        return false;
      } finally {
        r.disconnect();
      }
    }, 20_000);
  };
  await start();
  return {
    url,
    port,
    start,
    async stop() {
      const p = proc;
      proc = undefined;
      await stopOwn(p, 'SIGTERM');
    },
  };
}

export interface OwnPostgres {
  /** postgres://postgres@127.0.0.1:port/<db> */
  url(database: string): string;
  createDatabase(name: string): Promise<string>;
  /** SIGSTOP / SIGCONT to the postmaster and every backend it started. */
  freeze(): void;
  thaw(): void;
  /** Fast shutdown, waited for. */
  stop(): Promise<void>;
  start(): Promise<void>;
}

const asRoot = process.getuid?.() === 0;
/** PostgreSQL refuses to run as root: as root, its programs run as the postgres user. */
const asPostgres = (cmd: string, args: string[]) => (asRoot ? { cmd: 'setpriv', args: ['--reuid=postgres', '--regid=postgres', '--init-groups', '--', cmd, ...args] } : { cmd, args });

export async function startOwnPostgres(): Promise<OwnPostgres> {
  const bin = dirname(realpathSync(execFileSync('which', ['initdb']).toString().trim()));
  const port = await freePort();
  const dir = ownFolder('meshq-own-pg-');
  if (asRoot) chownSync(dir, Number(execFileSync('id', ['-u', 'postgres']).toString()), Number(execFileSync('id', ['-g', 'postgres']).toString()));
  const data = join(dir, 'data');
  const init = asPostgres(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8']);
  execFileSync(init.cmd, init.args, { stdio: 'ignore' });
  let proc: ChildProcess | undefined;
  const admin = () => new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${port}/postgres` });
  const start = async () => {
    const run = asPostgres(join(bin, 'postgres'), ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off']);
    proc = spawnOwn(run.cmd, run.args);
    await waitFor(`postgres on ${port}`, async () => {
      const c = admin();
      c.on('error', () => undefined);
      try {
        await c.connect();
        await c.query('select 1');
        return true;
      } catch {
        return false;
      } finally {
        await c.end().catch(() => undefined);
      }
    }, 30_000);
  };
  /** The postmaster (setpriv execs it, so it is our child's pid) and its children, the backends. */
  const pids = (): number[] => {
    if (!proc?.pid) return [];
    const children = execFileSync('ps', ['-o', 'pid=', '--ppid', String(proc.pid)]).toString().split(/\s+/).filter(Boolean).map(Number);
    return [proc.pid, ...children];
  };
  await start();
  // The pid file names the postmaster: make sure it is the process we started.
  const pidFile = Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);
  if (pidFile !== proc!.pid) throw new Error(`postmaster pid ${pidFile} is not the started process ${proc!.pid}`);
  return {
    url: (database) => `postgres://postgres@127.0.0.1:${port}/${database}`,
    async createDatabase(name) {
      const c = admin();
      await c.connect();
      try {
        await c.query(`create database "${name}"`);
      } finally {
        await c.end();
      }
      return `postgres://postgres@127.0.0.1:${port}/${name}`;
    },
    freeze: () => pids().forEach((pid) => process.kill(pid, 'SIGSTOP')),
    thaw: () => pids().forEach((pid) => process.kill(pid, 'SIGCONT')),
    start,
    async stop() {
      const p = proc;
      proc = undefined;
      await stopOwn(p, 'SIGINT');
    },
  };
}

/** Kills every instance started here (thawed first) and removes their folders. */
export async function stopOwnServices(): Promise<void> {
  await Promise.all(
    [...running].map(async (p) => {
      try {
        process.kill(p.pid!, 'SIGCONT');
      } catch {
        /* gone */
      }
      p.kill('SIGKILL');
      await exited(p);
    }),
  );
  for (const dir of folders.splice(0)) rmSync(dir, { recursive: true, force: true });
}
