/**
 * Real child processes for tests, always reaped: every process started with
 * `startWorkerProcess` or `startProcess` is killed in `killAll()`, which each test file
 * that starts one calls in afterAll; `runProcess` kills its own child when it overstays.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

const children = new Set<ChildProcess>();

/** The repository's root: where `node --import tsx src/bin/...` runs. */
export const root = fileURLToPath(new URL('../..', import.meta.url));

/** A child's environment: only PATH and HOME of this one, so nothing of the test's own leaks in. */
export const cleanEnv = (env: Record<string, string>): Record<string, string> => ({ PATH: process.env.PATH!, HOME: process.env.HOME!, ...env });

/** `node --import tsx <entry> ...args`: a TypeScript entry of this repository, run from source. */
export const tsEntry = (entry: string, args: string[] = []): string[] => ['--import', 'tsx', entry, ...args];

export interface Child {
  proc: ChildProcess;
  pid: number;
  output(): string;
  exited: Promise<number | null>;
}

export async function startWorkerProcess(env: Record<string, string>): Promise<Child> {
  const script = fileURLToPath(new URL('./worker-child.ts', import.meta.url));
  const proc = fork(script, [], {
    env: { ...process.env, ...env },
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  const { output, exited } = track(proc);
  const code = exited.then(({ code }) => code);
  await new Promise<void>((resolve, reject) => {
    proc.once('message', () => resolve());
    void code.then((c) => reject(new Error(`worker exited (${c}) before it was ready:\n${output()}`)));
  });
  return { proc, pid: proc.pid!, output, exited: code };
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Started {
  proc: ChildProcess;
  /** stdout and stderr so far, as they came. */
  output(): string;
  stdout(): string;
  stderr(): string;
  exited: Promise<Exit>;
}

export interface StartOptions {
  cwd?: string;
  /** The child's whole environment (see `cleanEnv`). */
  env?: Record<string, string>;
  /** Text for the child's stdin, which is then closed; without it stdin is ignored. */
  stdin?: string;
  /** A stdin pipe left open instead: script(1), say, ends at the end of its input. */
  openStdin?: boolean;
}

/** Starts a program with its output captured; tracked, so `killAll()` reaps it. */
export function startProcess(cmd: string, args: string[], opts: StartOptions = {}): Started {
  const proc = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: [opts.stdin === undefined && !opts.openStdin ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
  if (opts.stdin !== undefined) proc.stdin!.end(opts.stdin);
  return { proc, ...track(proc) };
}

function track(proc: ChildProcess): Omit<Started, 'proc'> {
  children.add(proc);
  let out = '';
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d) => {
    out += d;
    stdout += d;
  });
  proc.stderr!.on('data', (d) => {
    out += d;
    stderr += d;
  });
  const exited = new Promise<Exit>((resolve, reject) => {
    proc.once('error', reject);
    proc.once('exit', (code, signal) => {
      children.delete(proc);
      resolve({ code, signal });
    });
  });
  return { output: () => out, stdout: () => stdout, stderr: () => stderr, exited };
}

export interface Ran extends Exit {
  /** stdout and stderr, as they came. */
  out: string;
  stdout: string;
  stderr: string;
  /** From start to exit. */
  ms: number;
}

/** Runs a program to its end (SIGKILLed after `timeoutMs`) and returns its exit and output. */
export async function runProcess(cmd: string, args: string[], opts: StartOptions & { timeoutMs?: number } = {}): Promise<Ran> {
  const started = Date.now();
  const child = startProcess(cmd, args, opts);
  const timer = setTimeout(() => child.proc.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
  try {
    const exit = await child.exited;
    return { ...exit, out: child.output(), stdout: child.stdout(), stderr: child.stderr(), ms: Date.now() - started };
  } finally {
    clearTimeout(timer);
  }
}

/** Runs a TypeScript entry of this repository (`src/bin/...`) from the root, in a clean environment. */
export const runEntry = (entry: string, env: Record<string, string>, timeoutMs = 30_000): Promise<Ran> =>
  runProcess(process.execPath, tsEntry(entry), { cwd: root, env: cleanEnv(env), timeoutMs });

export async function killAll(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  await Promise.all(
    [...children].map(async (c) => {
      const gone = exited(c);
      if (c.exitCode === null && c.signalCode === null) c.kill(signal);
      await gone;
    }),
  );
}

/** Resolves once the process has exited (at once when it already has). */
export function exited(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((r) => proc.once('exit', () => r()));
}

/** A port free right now on 127.0.0.1 (bound, noted, closed); nothing listens on it until someone starts to. */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as { port: number };
  await new Promise((r) => srv.close(r));
  return port;
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 60_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
