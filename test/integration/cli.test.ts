/**
 * The `meshq` CLI end to end, as an operator runs it: a child process
 * (`node --import tsx src/bin/cli.ts --json ...`) against a meshq listening on a real
 * port (API and in-process workers, own database and queue prefix), its stdout parsed
 * as JSON and its exit code checked: 0 done, 1 refused or failed, 2 usage, 3 unreachable.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS } from '../support/db.js';
import { cleanEnv, freePort, killAll, root, runProcess, startProcess, tsEntry } from '../support/processes.js';
import { startStack, type Stack } from '../support/stack.js';

const PASSWORD = 'cli-admin-password';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  json: () => any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** Runs the CLI as a child process; never blocks this process's event loop (the API runs in it). */
async function meshq(args: string[], env: Record<string, string>, stdin?: string): Promise<Run> {
  const { code, stdout, stderr } = await runProcess(process.execPath, tsEntry('src/bin/cli.ts', args), { cwd: root, env: cleanEnv(env), stdin, timeoutMs: 120_000 });
  return {
    code,
    stdout,
    stderr,
    json: () => {
      try {
        return JSON.parse(stdout);
      } catch {
        throw new Error(`meshq ${args.join(' ')}: stdout is not JSON (exit ${code}):\n${stdout}\nstderr:\n${stderr}`);
      }
    },
  };
}

afterAll(() => killAll());

describe('meshq CLI without a server', () => {
  it('exits 3 with a JSON error when meshq is unreachable', async () => {
    const port = await freePort();
    const r = await meshq(['--json', 'configs', 'list'], { MESHQ_URL: `http://127.0.0.1:${port}`, MESHQ_PASSWORD: 'x' });
    expect(r.code).toBe(3);
    expect(r.json().error.message).toContain(`http://127.0.0.1:${port} is not reachable`);
    expect(r.stderr).toMatch(/ECONNREFUSED/);
  });

  it('exits 2 on a usage error: an unknown command, a missing argument, a bad MESHQ_URL, bad JSON', async () => {
    expect((await meshq(['jobs', 'frobnicate'], {})).code).toBe(2);
    expect((await meshq(['jobs', 'submit'], {})).code).toBe(2);
    const badUrl = await meshq(['configs', 'list'], { MESHQ_URL: 'ftp://example' });
    expect(badUrl.code).toBe(2);
    expect(badUrl.stderr).toContain('MESHQ_URL: must be an http:// or https:// URL');
    const badJson = await meshq(['jobs', 'submit', 'config.create', '{name:'], { MESHQ_URL: 'http://127.0.0.1:9' });
    expect(badJson.code).toBe(2);
    expect(badJson.stderr).toContain('data: not valid JSON');
  });

  it('says an endpoint is not available when an older meshq has no such route, and exits 3 on a 5xx', async () => {
    const server = createHttpServer((req, res) => {
      const [status, code, message] = req.url === '/api/v1/configs?limit=500' ? [503, 'UNAVAILABLE', 'database down'] : [404, 'NOT_FOUND', `no route ${req.method} ${req.url!.split('?')[0]}`];
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code, message } }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const env = { MESHQ_URL: `http://127.0.0.1:${(server.address() as { port: number }).port}`, MESHQ_TOKEN: 'mq_x' };
      const events = await meshq(['--json', 'events'], env);
      expect(events.code).toBe(1);
      expect(events.json().error).toMatchObject({ status: 404, code: 'NOT_AVAILABLE' });
      expect(events.stderr).toContain('the event stream is not available on this meshq');
      const retry = await meshq(['jobs', 'retry', 'some-id'], env);
      expect(retry.code).toBe(1);
      expect(retry.stderr).toContain('retrying a job is not available on this meshq');
      const down = await meshq(['--json', 'configs', 'list'], env);
      expect(down.code).toBe(3);
      expect(down.json().error).toMatchObject({ status: 503, code: 'UNAVAILABLE' });
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it('prints a bash completion script that bash accepts and that names the commands', async () => {
    const r = await meshq(['completion', 'bash'], {});
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('complete -o default -F _meshq_complete meshq');
    for (const word of ['jobs', 'snapshot', 'tokens', 'submit', 'restore']) expect(r.stdout).toContain(word);
    const check = await runProcess('bash', ['-n'], { stdin: r.stdout });
    expect(check.code).toBe(0);
  });
});

describe.each(DIALECTS)('meshq CLI against a running meshq (%s)', (dialect) => {
  let stack: Stack;
  let env: Record<string, string>;
  let dir: string;

  beforeAll(async () => {
    stack = await startStack(dialect, 'cli', { adminPassword: PASSWORD });
    await stack.api.listen({ host: '127.0.0.1', port: 0 });
    const { port } = stack.api.server.address() as { port: number };
    env = { MESHQ_URL: `http://127.0.0.1:${port}`, MESHQ_PASSWORD: PASSWORD };
    dir = await mkdtemp(join(tmpdir(), 'meshq-cli-'));
  });

  afterAll(async () => {
    await stack?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('builds a mesh of three nodes, exports and downloads a snapshot, and restores it', async () => {
    const config = await meshq(['--json', 'jobs', 'submit', 'config.create', '{"name":"home","subnet":"10.10.0.0/24"}'], env);
    expect(config.code, config.stderr).toBe(0);
    expect(config.json()).toMatchObject({ type: 'config.create', state: 'completed' });
    const configId: string = config.json().result.id;

    const nodeIds: string[] = [];
    for (const name of ['gw', 'laptop', 'phone']) {
      const node = await meshq(['--json', 'jobs', 'submit', 'node.create', '--data', JSON.stringify({ configId, name, kind: 'static' })], env);
      expect(node.code, node.stderr).toBe(0);
      nodeIds.push(node.json().result.id);
    }
    const mesh = await meshq(['--json', 'jobs', 'submit', 'mesh.generate', JSON.stringify({ configId })], env);
    expect(mesh.code, mesh.stderr).toBe(0);
    expect(mesh.json().result).toEqual({ created: 3 });

    const links = await meshq(['--json', 'links', 'list', configId], env);
    expect(links.code, links.stderr).toBe(0);
    const pairs = new Set((links.json() as { fromNodeId: string; toNodeId: string }[]).map((l) => [l.fromNodeId, l.toNodeId].sort().join(' ')));
    expect(pairs.size).toBe(3);
    for (const pair of pairs) for (const id of pair.split(' ')) expect(nodeIds).toContain(id);

    const nodes = await meshq(['--json', 'nodes', 'list', configId], env);
    expect((nodes.json() as { name: string }[]).map((n) => n.name).sort()).toEqual(['gw', 'laptop', 'phone']);

    const confFile = join(dir, `${dialect}-gw.conf`);
    const conf = await meshq(['--json', 'nodes', 'config', nodeIds[0]!, '--output', confFile], env);
    expect(conf.code, conf.stderr).toBe(0);
    expect(conf.json()).toEqual({ nodeId: nodeIds[0], file: confFile });
    const confText = await readFile(confFile, 'utf8');
    expect(confText).toContain('[Interface]');
    expect(confText.match(/^\[Peer\]/gm)).toHaveLength(2);
    expect((await stat(confFile)).mode & 0o777).toBe(0o600);

    const file = join(dir, `${dialect}.meshq`);
    const exported = await meshq(['--json', 'snapshot', 'export', '--download', file], env);
    expect(exported.code, exported.stderr).toBe(0);
    expect(exported.stderr).toBe(''); // no progress bar into a pipe
    const { snapshot, file: downloaded } = exported.json();
    const bytes = await readFile(file);
    expect(downloaded).toEqual({ path: file, bytes: bytes.length, sha256: snapshot.sha256 });
    expect(bytes.length).toBe(snapshot.size);
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(snapshot.sha256);

    const listed = await meshq(['--json', 'snapshot', 'list'], env);
    expect((listed.json() as { id: string }[]).map((s) => s.id)).toContain(snapshot.id);
    const newest = await meshq(['snapshot', 'list', '--get', '0.sha256'], env);
    expect(newest.stdout).toBe(`${snapshot.sha256}\n`);

    // A change after the export, which the restore must undo.
    const other = await meshq(['--json', 'jobs', 'submit', 'config.create', '{"name":"other","subnet":"10.20.0.0/24"}'], env);
    expect(other.code, other.stderr).toBe(0);

    const wrong = await meshq(['--json', 'snapshot', 'restore', file, '--password', 'not-the-password'], env);
    expect(wrong.code).toBe(1);
    expect(wrong.json().error.status).toBe(400);

    const restored = await meshq(['--json', 'snapshot', 'restore', file], env, `${PASSWORD}\n`);
    expect(restored.code, restored.stderr).toBe(0);
    expect(restored.json()).toMatchObject({ type: 'snapshot.restore', state: 'completed' });

    const configs = await meshq(['--json', 'configs', 'list'], env);
    expect((configs.json() as { name: string }[]).map((c) => c.name)).toEqual(['home']);
    const after = await meshq(['--json', 'links', 'list', configId], env);
    expect(after.json()).toEqual(links.json());
  }, 240_000); // some twenty CLI processes, each starting Node and tsx

  it('queues without waiting, then waits; a refused request exits 1 with the API error as JSON', async () => {
    const queued = await meshq(['--json', 'jobs', 'submit', 'config.create', '{"name":"later","subnet":"10.30.0.0/24"}', '--no-wait'], env);
    expect(queued.code, queued.stderr).toBe(0);
    const id: string = queued.json().id;
    const waited = await meshq(['--json', 'jobs', 'wait', id], env);
    expect(waited.code, waited.stderr).toBe(0);
    expect(waited.json()).toMatchObject({ id, state: 'completed' });
    const got = await meshq(['--json', 'jobs', 'get', id], env);
    expect(got.json()).toMatchObject({ id, state: 'completed' });
    const list = await meshq(['--json', 'jobs', 'list', '--type', 'config.create'], env);
    expect((list.json() as { id: string }[]).map((j) => j.id)).toContain(id);

    const bad = await meshq(['--json', 'jobs', 'submit', 'config.create', '{"name":"x","subnet":"not a subnet"}'], env);
    expect(bad.code).toBe(1);
    expect(bad.json().error).toMatchObject({ status: 400, code: 'INVALID', exitCode: 1 });
    expect(bad.stderr).toContain('subnet');

    const denied = await meshq(['--json', 'configs', 'list'], { ...env, MESHQ_PASSWORD: 'wrong-password' });
    expect(denied.code).toBe(1);
    expect(denied.json().error.status).toBe(401);
  }, 120_000);

  it('retries a failed job (it fails again, exit 1), refuses to cancel a finished one, and follows the event stream', async () => {
    const config = await meshq(['--json', 'jobs', 'submit', 'config.create', '{"name":"events","subnet":"10.50.0.0/24"}'], env);
    const configId: string = config.json().result.id;
    const node = JSON.stringify({ configId, name: 'twin', kind: 'static' });
    expect((await meshq(['--json', 'jobs', 'submit', 'node.create', node], env)).code).toBe(0);
    // The API's precheck looks at the config only: the duplicate name fails in the job.
    const failed = await meshq(['--json', 'jobs', 'submit', 'node.create', node], env);
    expect(failed.code).toBe(1);
    expect(failed.json()).toMatchObject({ type: 'node.create', state: 'failed', error: { code: 'CONFLICT' } });
    const retried = await meshq(['--json', 'jobs', 'retry', failed.json().id], env);
    expect(retried.code, retried.stderr).toBe(1);
    expect(retried.json()).toMatchObject({ id: failed.json().id, state: 'failed' });

    const cancel = await meshq(['--json', 'jobs', 'cancel', config.json().id], env);
    expect(cancel.code).toBe(1);
    expect(cancel.json().error.status).toBe(409);

    // The stream starts at "now": submit until one of our jobs is seen completing.
    const events = startProcess(process.execPath, tsEntry('src/bin/cli.ts', ['--json', 'events', '--type', 'job.*']), { cwd: root, env: cleanEnv(env) });
    const out = () => events.stdout();
    const submitted: string[] = [];
    const seen = () =>
      out()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { id: string; type: string; data: { jobId?: string } })
        .find((e) => e.type === 'job.completed' && submitted.includes(e.data.jobId!));
    try {
      const deadline = Date.now() + 60_000;
      for (let i = 0; !seen(); i++) {
        expect(Date.now(), `no job.completed event in:\n${out()}`).toBeLessThan(deadline);
        const r = await meshq(['--json', 'jobs', 'submit', 'config.create', JSON.stringify({ name: `ev${i}`, subnet: `10.51.${i}.0/24` })], env);
        submitted.push(r.json().id);
      }
      expect(seen()!.id).toBeTruthy();
    } finally {
      events.proc.kill('SIGINT');
    }
    expect((await events.exited).code).toBe(0);
  }, 180_000);

  // `script` gives the command a pseudo-terminal, as a person at a terminal has.
  it('shows a progress bar for an export on a terminal', async () => {
    expect(spawnSync('script', ['--version']).status, 'script(1) (util-linux) runs the command on a pseudo-terminal').toBe(0);
    const { code, stdout: out } = await runProcess('script', ['-qec', `${process.execPath} --import tsx src/bin/cli.ts snapshot export`, '/dev/null'], {
      cwd: root,
      env: cleanEnv({ TERM: 'xterm', ...env }),
      openStdin: true,
      timeoutMs: 120_000,
    });
    expect(code, out).toBe(0);
    expect(out).toMatch(/snapshot\.export \[[^\]]*\] 100%/);
    expect(out).toMatch(/snapshot \S+ \(\d+ bytes, sha256 [0-9a-f]{64}\)/);
  });

  it('creates a scoped token that works, is refused beyond its scope, and stops working once revoked', async () => {
    const created = await meshq(['--json', 'tokens', 'create', 'ci-reader', '--scope', 'read'], env);
    expect(created.code, created.stderr).toBe(0);
    const { id, token } = created.json();
    expect(token).toMatch(/^mq_/);
    const tokenEnv = { MESHQ_URL: env.MESHQ_URL!, MESHQ_TOKEN: token };

    expect((await meshq(['--json', 'configs', 'list'], tokenEnv)).code).toBe(0);
    const write = await meshq(['--json', 'jobs', 'submit', 'config.create', '{"name":"nope","subnet":"10.40.0.0/24"}'], tokenEnv);
    expect(write.code).toBe(1);
    expect(write.json().error.status).toBe(403);

    const tokens = await meshq(['--json', 'tokens', 'list'], env);
    expect((tokens.json() as { id: string }[]).map((t) => t.id)).toContain(id);
    expect(tokens.stdout).not.toContain(token);

    const revoked = await meshq(['--json', 'tokens', 'revoke', id], env);
    expect(revoked.code, revoked.stderr).toBe(0);
    const after = await meshq(['--json', 'configs', 'list'], tokenEnv);
    expect(after.code).toBe(1);
    expect(after.json().error.status).toBe(401);
  }, 120_000);
});
