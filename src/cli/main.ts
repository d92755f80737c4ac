/**
 * `meshq`: the command line of meshq's HTTP API (`meshq --help`). Configuration comes from
 * MESHQ_URL, MESHQ_TOKEN or MESHQ_USER/MESHQ_PASSWORD (src/cli/env.ts); exit codes are in
 * src/cli/errors.ts. With `--json` every command prints one JSON document on stdout (the
 * `events` stream one per line) and nothing else goes there; messages and progress bars
 * go to stderr, bars only when it is a terminal.
 */
import { createHash } from 'node:crypto';
import { createReadStream, openAsBlob } from 'node:fs';
import { access, chmod, writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { completionScript } from './completion.js';
import { readCliEnv } from './env.js';
import { ApiRefusal, CliError, EXIT, JobFailed, StillRunning, UsageError } from './errors.js';
import { ApiClient } from './http.js';
import { percentOf, progressBar } from './progress.js';
import { PromptCancelled, readSecret } from './prompt.js';
import { readSse } from './sse.js';

interface JobView {
  id: string;
  type: string;
  state: 'waiting' | 'delayed' | 'active' | 'completed' | 'failed' | string;
  progress: unknown;
  result: unknown;
  error: { code: string; message: string } | null;
  [key: string]: unknown;
}

/** Job types whose run is long enough to deserve a progress bar. */
const LONG_JOBS = new Set(['mesh.generate', 'snapshot.export', 'snapshot.restore']);
const DEFAULT_WAIT_SECONDS = 600;

interface Globals {
  json?: boolean;
  get?: string;
  url?: string;
}

/** The value at a dot path (`result.id`, `items.0.name`), for `--get`. */
function pick(value: unknown, path: string): unknown {
  let v = value;
  for (const key of path.split('.')) {
    if (v === null || typeof v !== 'object' || !(key in v)) throw new UsageError(`--get ${path}: the output has no "${key}" there`);
    v = (v as Record<string, unknown>)[key];
  }
  return v;
}

class Cli {
  private clientCache: ApiClient | undefined;
  constructor(private readonly program: Command) {}

  get globals(): Globals {
    return this.program.opts<Globals>();
  }

  get client(): ApiClient {
    if (!this.clientCache) {
      const env = readCliEnv(undefined, this.globals.url);
      this.clientCache = new ApiClient(env.url, env.credentials);
    }
    return this.clientCache;
  }

  /** Prints `value` as JSON (--json) or as the human text `human` makes of it. */
  print(value: unknown, human: () => string): void {
    const { get, json } = this.globals;
    if (get !== undefined) {
      const v = pick(value, get);
      process.stdout.write((typeof v === 'string' ? v : JSON.stringify(v)) + '\n');
      return;
    }
    process.stdout.write(json ? JSON.stringify(value, null, 2) + '\n' : human());
  }

  note(text: string): void {
    if (!this.globals.json) process.stderr.write(text + '\n');
  }

  /** Polls the job until it is completed or failed; a bar follows long jobs on a terminal. */
  async waitForJob(id: string, timeoutSeconds: number, type?: string): Promise<JobView> {
    const deadline = Date.now() + timeoutSeconds * 1000;
    let view = await this.client.get<JobView>(`/api/v1/jobs/${encodeURIComponent(id)}`);
    const bar = progressBar(view.type, LONG_JOBS.has(type ?? view.type));
    try {
      for (let delay = 100; view.state !== 'completed' && view.state !== 'failed'; delay = Math.min(delay * 2, 1000)) {
        const percent = percentOf(view.progress);
        if (percent !== undefined) bar.update(percent);
        if (Date.now() + delay > deadline) {
          throw new StillRunning(`job ${id} (${view.type}) is still ${view.state} after ${timeoutSeconds} s: \`meshq jobs wait ${id}\` waits again`);
        }
        await new Promise((r) => setTimeout(r, delay));
        view = await this.client.get<JobView>(`/api/v1/jobs/${encodeURIComponent(id)}`);
      }
      if (view.state === 'completed') bar.update(100);
    } finally {
      bar.stop();
    }
    return view;
  }

  /** Prints a finished job; a failed one prints too, then exits 1. */
  finishJob(view: JobView): void {
    this.print(view, () => `job ${view.id} ${view.type} ${view.state}${view.state === 'completed' ? `: ${JSON.stringify(view.result)}` : ''}\n`);
    if (view.state === 'failed') throw new JobFailed(view);
  }
}

const seconds = (value: string): number => {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--timeout: "${value}" is not a positive number of seconds`);
  return n;
};

function parseJson(text: string, where: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${where}: not valid JSON (${(err as Error).message})`);
  }
}

function table(rows: Record<string, unknown>[], columns: string[]): string {
  if (rows.length === 0) return '(none)\n';
  const cell = (v: unknown) => (v === null || v === undefined ? '-' : typeof v === 'object' ? JSON.stringify(v) : String(v));
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (values: string[]) => values.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd() + '\n';
  return line(columns) + rows.map((r) => line(columns.map((c) => cell(r[c])))).join('');
}

/** A 404 from a route this meshq does not have (an older server), told apart from "no such job". */
function unavailable(err: unknown, what: string): never {
  if (err instanceof ApiRefusal && err.status === 404 && /^\S+ \S+: 404 NOT_FOUND: no route /.test(err.message)) {
    throw new ApiRefusal(404, 'NOT_AVAILABLE', `${what} is not available on this meshq (it has no such endpoint: upgrade the server)`);
  }
  throw err;
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export function buildProgram(): Command {
  const program = new Command('meshq');
  const cli = new Cli(program);
  program
    .description("meshq's command line: talks to the HTTP API at MESHQ_URL (default http://127.0.0.1:3000)")
    .option('--json', 'machine output: one JSON document on stdout')
    .option('--get <path>', 'print only this field of the JSON output, e.g. result.id (strings without quotes)')
    .option('--url <url>', 'the API base URL (overrides MESHQ_URL)')
    .addHelpText(
      'after',
      `
Credentials: MESHQ_TOKEN (an API token), or MESHQ_PASSWORD (and MESHQ_USER, default admin).
Exit codes: 0 done, 1 job failed or request refused (4xx), 2 usage, 3 meshq unreachable or 5xx.`,
    )
    .showHelpAfterError('(meshq --help for usage)')
    .exitOverride()
    .configureOutput({ writeOut: (s) => process.stdout.write(s), writeErr: (s) => process.stderr.write(s) });

  // ---- jobs
  const jobs = program.command('jobs').description('submit, inspect, wait for, retry and cancel jobs');
  jobs
    .command('submit <type> [data]')
    .description('submit a job (data: its JSON payload) and wait for it to finish')
    .option('--data <json>', 'the JSON payload (instead of the argument)')
    .option('--no-wait', 'print the queued job at once instead of waiting')
    .option('--timeout <seconds>', 'how long to wait', String(DEFAULT_WAIT_SECONDS))
    .option('--idempotency-key <key>', 'the same key submits one job, once')
    .action(async (type: string, data: string | undefined, opts: { data?: string; wait: boolean; timeout: string; idempotencyKey?: string }) => {
      if (data !== undefined && opts.data !== undefined) throw new UsageError('give the payload once: as the argument or with --data');
      const payload = parseJson(data ?? opts.data ?? '{}', 'data');
      const timeout = seconds(opts.timeout);
      const job = await cli.client.job<JobView>('POST', '/api/v1/jobs', {
        body: { type, data: payload },
        headers: opts.idempotencyKey ? { 'idempotency-key': opts.idempotencyKey } : {},
      });
      if (!opts.wait) return cli.print(job, () => `job ${job.id} ${job.type} ${job.state}\n`);
      cli.finishJob(await cli.waitForJob(job.id, timeout, type));
    });
  jobs
    .command('get <id>')
    .description("a job's state, progress, result or error")
    .action(async (id: string) => {
      const job = await cli.client.get<JobView>(`/api/v1/jobs/${encodeURIComponent(id)}`);
      cli.print(job, () => JSON.stringify(job, null, 2) + '\n');
    });
  jobs
    .command('list')
    .description('recent jobs, newest first')
    .option('--type <type>', 'only this job type')
    .addOption(new Option('--state <state>', 'only jobs in this state').choices(['waiting', 'delayed', 'active', 'completed', 'failed']))
    .option('--limit <n>', 'at most this many (1-500)', '50')
    .action(async (opts: { type?: string; state?: string; limit: string }) => {
      const page = await cli.client.get<{ items: JobView[] }>('/api/v1/jobs', { type: opts.type, state: opts.state, limit: opts.limit });
      cli.print(page.items, () => table(page.items, ['id', 'type', 'state', 'createdAt', 'finishedAt']));
    });
  jobs
    .command('wait <id>')
    .description('wait for a job to finish; exits 1 if it failed')
    .option('--timeout <seconds>', 'how long to wait', String(DEFAULT_WAIT_SECONDS))
    .action(async (id: string, opts: { timeout: string }) => {
      cli.finishJob(await cli.waitForJob(id, seconds(opts.timeout)));
    });
  jobs
    .command('retry <id>')
    .description('run a failed job again (same id: its effect still applies at most once) and wait for it')
    .option('--no-wait', 'print the queued job at once instead of waiting')
    .option('--timeout <seconds>', 'how long to wait', String(DEFAULT_WAIT_SECONDS))
    .action(async (id: string, opts: { wait: boolean; timeout: string }) => {
      const timeout = seconds(opts.timeout);
      const job = await cli.client
        .job<JobView>('POST', `/api/v1/jobs/${encodeURIComponent(id)}/retry`)
        .catch((err: unknown) => unavailable(err, 'retrying a job'));
      if (!opts.wait) return cli.print(job, () => `job ${job.id} ${job.type} queued again\n`);
      cli.finishJob(await cli.waitForJob(job.id, timeout));
    });
  jobs
    .command('cancel <id>')
    .description('cancel a job that has not started')
    .action(async (id: string) => {
      const res = await cli.client.send('DELETE', `/api/v1/jobs/${encodeURIComponent(id)}`).catch((err: unknown) => unavailable(err, 'cancelling a job'));
      const text = await res.text();
      const body = text ? parseJson(text, 'answer') : { id, cancelled: true };
      cli.print(body, () => `job ${id} cancelled\n`);
    });

  // ---- reads
  program
    .command('configs')
    .description('mesh configs')
    .command('list')
    .description('every config')
    .action(async () => {
      const items = await cli.client.all<Record<string, unknown>>('/api/v1/configs');
      cli.print(items, () => table(items, ['id', 'name', 'subnet', 'protocol', 'listenPort']));
    });

  const nodes = program.command('nodes').description("a config's nodes");
  nodes
    .command('list <configId>')
    .description("a config's nodes")
    .addOption(new Option('--kind <kind>', 'only this kind').choices(['static', 'dynamic']))
    .action(async (configId: string, opts: { kind?: string }) => {
      const items = await cli.client.all<Record<string, unknown>>(`/api/v1/configs/${encodeURIComponent(configId)}/nodes`, { kind: opts.kind });
      cli.print(items, () => table(items, ['id', 'name', 'kind', 'address', 'endpoint', 'online']));
    });
  nodes
    .command('config <id>')
    .description("the node's rendered WireGuard configuration (it holds the node's private key)")
    .option('-o, --output <file>', 'write it to this file (mode 600) instead of stdout')
    .action(async (id: string, opts: { output?: string }) => {
      const res = await cli.client
        .send('GET', `/api/v1/nodes/${encodeURIComponent(id)}/wireguard.conf`, { headers: { accept: 'text/plain, application/json' } })
        .catch((err: unknown) => unavailable(err, "a node's WireGuard configuration"));
      const text = await res.text();
      if (opts.output) {
        await writeFile(opts.output, text, { mode: 0o600 });
        await chmod(opts.output, 0o600);
        return cli.print({ nodeId: id, file: opts.output }, () => `written to ${opts.output}\n`);
      }
      cli.print({ nodeId: id, config: text }, () => text);
    });

  program
    .command('links')
    .description("a config's peer links")
    .command('list <configId>')
    .description("a config's peer links")
    .option('--node <nodeId>', "only this node's links")
    .action(async (configId: string, opts: { node?: string }) => {
      const items = await cli.client.all<Record<string, unknown>>(`/api/v1/configs/${encodeURIComponent(configId)}/links`, { nodeId: opts.node });
      cli.print(items, () => table(items, ['id', 'fromNodeId', 'toNodeId', 'allowedIps']));
    });

  // ---- snapshots
  const snapshot = program.command('snapshot').description('encrypted exports: make, list, download, restore');
  snapshot
    .command('export')
    .description('export every business row into a stored, encrypted snapshot')
    .option('--download <file>', 'then download it to this file')
    .option('--timeout <seconds>', 'how long to wait for the export', String(DEFAULT_WAIT_SECONDS))
    .action(async (opts: { download?: string; timeout: string }) => {
      const timeout = seconds(opts.timeout);
      const queued = await cli.client.json<JobView>('POST', '/api/v1/snapshots/export');
      const job = await cli.waitForJob(queued.id, timeout, 'snapshot.export');
      if (job.state === 'failed') return cli.finishJob(job);
      const result = job.result as { snapshotId: string; size: number; sha256: string };
      let file: { path: string; bytes: number; sha256: string } | undefined;
      if (opts.download) {
        const bar = progressBar('download', true);
        let got = 0;
        try {
          const done = await cli.client.download(`/api/v1/snapshots/${result.snapshotId}/download`, opts.download, (n, total) => {
            got += n;
            bar.update((100 * got) / (total ?? result.size));
          });
          bar.update(100);
          file = { path: opts.download, bytes: done.bytes, sha256: await sha256File(opts.download) };
        } finally {
          bar.stop();
        }
        if (file.sha256 !== result.sha256) throw new ApiRefusal(502, 'BAD_DOWNLOAD', `downloaded ${file.bytes} bytes whose SHA-256 differs from the export's: download again`);
      }
      cli.print({ job, snapshot: { id: result.snapshotId, size: result.size, sha256: result.sha256 }, ...(file ? { file } : {}) }, () =>
        `snapshot ${result.snapshotId} (${result.size} bytes, sha256 ${result.sha256})${file ? ` downloaded to ${file.path}` : ''}\n`,
      );
    });
  snapshot
    .command('list')
    .description('stored exports, newest first')
    .action(async () => {
      const items = await cli.client.all<Record<string, unknown>>('/api/v1/snapshots');
      cli.print(items, () => table(items, ['id', 'createdAt', 'size', 'sha256']));
    });
  snapshot
    .command('restore <file>')
    .description('replace every business row with a snapshot file (asks for its password unless given)')
    .option('--password <password>', 'the administrator password at export time (else read without echo, or from stdin)')
    .option('--timeout <seconds>', 'how long to wait for the restore', String(DEFAULT_WAIT_SECONDS))
    .action(async (file: string, opts: { password?: string; timeout: string }) => {
      const timeout = seconds(opts.timeout);
      await access(file).catch(() => {
        throw new UsageError(`${file}: no such file`);
      });
      let password = opts.password;
      if (password === undefined) {
        password = await readSecret('snapshot password: ').catch((err: unknown) => {
          throw err instanceof PromptCancelled ? new UsageError('cancelled') : err;
        });
      }
      if (!password) throw new UsageError('the snapshot password is empty');
      const form = new FormData();
      form.append('password', password);
      form.append('file', await openAsBlob(file), basename(file));
      const queued = await cli.client.json<JobView>('POST', '/api/v1/snapshots/restore', { form, unbounded: true });
      cli.finishJob(await cli.waitForJob(queued.id, timeout, 'snapshot.restore'));
    });

  // ---- tokens
  const tokens = program.command('tokens').description('API tokens (administrator only)');
  tokens
    .command('create <name>')
    .description('create an API token; it is shown once')
    .option('--scope <scope...>', 'read, operate, credentials, snapshots, admin (default: the API default)')
    .option('--expires <iso>', 'when it stops working, e.g. 2030-01-31T00:00:00Z')
    .action(async (name: string, opts: { scope?: string[]; expires?: string }) => {
      const res = await cli.client.json<{ job: JobView; id: string; token: string }>('POST', '/api/v1/tokens', {
        query: { wait: 10_000 },
        body: { name, ...(opts.scope ? { scopes: opts.scope } : {}), ...(opts.expires ? { expiresAt: opts.expires } : {}) },
      });
      const job = res.job.state === 'completed' || res.job.state === 'failed' ? res.job : await cli.waitForJob(res.job.id, DEFAULT_WAIT_SECONDS);
      if (job.state === 'failed') return cli.finishJob(job);
      cli.print({ ...res, job }, () => `token ${res.id} "${name}" created; it is shown only now:\n${res.token}\n`);
    });
  tokens
    .command('list')
    .description('API tokens (never the token itself)')
    .action(async () => {
      const items = await cli.client.all<Record<string, unknown>>('/api/v1/tokens');
      cli.print(items, () => table(items, ['id', 'name', 'scopes', 'expiresAt', 'lastUsedAt']));
    });
  tokens
    .command('revoke <id>')
    .description('revoke an API token (it stops working at once)')
    .action(async (id: string) => {
      const queued = await cli.client.json<JobView>('POST', '/api/v1/jobs', { body: { type: 'token.revoke', data: { id } } });
      cli.finishJob(await cli.waitForJob(queued.id, DEFAULT_WAIT_SECONDS));
    });

  // ---- events
  program
    .command('events')
    .description('follow the event stream (job lifecycle, domain changes) until interrupted')
    .option('--type <type...>', 'only these event types: exact (job.completed) or a prefix (job.*, node.*)')
    .option('--last-event-id <id>', 'resume after this event')
    .action(async (opts: { type?: string[]; lastEventId?: string }) => {
      let lastId = opts.lastEventId;
      const stop = new AbortController();
      process.once('SIGINT', () => stop.abort());
      for (let attempt = 0; !stop.signal.aborted; attempt++) {
        try {
          const res = await cli.client
            .send('GET', '/api/v1/events', {
              query: { types: opts.type?.join(',') },
              headers: { accept: 'text/event-stream', ...(lastId ? { 'last-event-id': lastId } : {}) },
              unbounded: true,
              signal: stop.signal,
            })
            .catch((err: unknown) => unavailable(err, 'the event stream'));
          attempt = 0;
          for await (const ev of readSse(res.body as unknown as AsyncIterable<Uint8Array>)) {
            if (ev.id !== undefined) lastId = ev.id;
            let data: unknown = ev.data;
            try {
              data = JSON.parse(ev.data);
            } catch {
              /* plain text data stays a string */
            }
            process.stdout.write(cli.globals.json ? JSON.stringify({ id: ev.id ?? null, type: ev.event, data }) + '\n' : `${ev.id ?? '-'} ${ev.event} ${ev.data}\n`);
          }
        } catch (err) {
          if (stop.signal.aborted) break;
          // Refusals (401, 403, 404) will not change by retrying; a dropped stream will.
          if (err instanceof ApiRefusal && err.status < 500) throw err;
          if (attempt >= 5) throw err;
        }
        if (stop.signal.aborted) break;
        cli.note(`event stream ended; reconnecting${lastId ? ` after event ${lastId}` : ''}`);
        await new Promise((r) => setTimeout(r, 1000));
      }
    });

  // ---- completion
  program
    .command('completion')
    .description('print a shell completion script: eval "$(meshq completion bash)"')
    .addArgument(new Command().createArgument('<shell>', 'bash or zsh').choices(['bash', 'zsh']))
    .action((shell: 'bash' | 'zsh') => {
      process.stdout.write(completionScript(shell, program));
    });

  return program;
}

/** Runs the CLI and answers its exit code. */
export async function runCli(argv: string[]): Promise<number> {
  // A reader that stops early (`meshq jobs list | head`) is not an error of the CLI.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(EXIT.ok);
    throw err;
  });
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.code === 'commander.helpDisplayed' || err.code === 'commander.version' ? EXIT.ok : EXIT.usage;
    }
    const json = program.opts<Globals>().json;
    if (err instanceof CliError) {
      process.stderr.write(`meshq: ${err.message}\n`);
      if (json && !(err instanceof JobFailed)) {
        const refusal = err instanceof ApiRefusal ? { status: err.status, code: err.code, ...(err.details !== undefined ? { details: err.details } : {}) } : {};
        process.stdout.write(JSON.stringify({ error: { message: err.message, exitCode: err.exitCode, ...refusal } }, null, 2) + '\n');
      }
      return err.exitCode;
    }
    process.stderr.write(`meshq: ${(err as Error)?.stack ?? String(err)}\n`);
    return EXIT.failed;
  }
}
