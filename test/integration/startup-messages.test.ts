/**
 * Messages a person can act on: with no administrator yet every refused request says how
 * to create one; a PostgreSQL database or role that does not exist stops start-up at once
 * with the command that creates it; a port in use is one line, and `npm start` stops
 * before its workers take a job; `npm run admin -- set-password` reads the password
 * without echo (on a terminal) or from a pipe, and needs no Redis.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { bootstrap } from '../../src/bin/bootstrap.js';
import { connectOrm } from '../../src/db/orm.js';
import { UnitOfWork } from '../../src/db/unit-of-work.js';
import { parseServerKey } from '../../src/crypto.js';
import { setAdminPassword, verifyAdmin } from '../../src/repositories/admin-account.js';
import { createTestDatabase, DIALECTS, type TestDatabase } from '../support/db.js';
import { deletePrefix } from '../support/redis.js';
import { basic, startStack, type Stack } from '../support/stack.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function runEntry(args: string[], env: Record<string, string>, opts: { stdin?: string; timeoutMs?: number } = {}): Promise<Ran> {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, ['--import', 'tsx', ...args], {
      cwd: root,
      env: { PATH: process.env.PATH!, HOME: process.env.HOME!, ...env },
      stdio: [opts.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    if (opts.stdin !== undefined) child.stdin!.end(opts.stdin);
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
  });
}

async function listening(): Promise<{ server: Server; port: number }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as { port: number }).port };
}

async function closedPort(): Promise<number> {
  const { server, port } = await listening();
  await new Promise((r) => server.close(r));
  return port;
}

const NO_ADMIN = /no administrator yet: set ADMIN_PASSWORD and restart meshq, or run `npm run admin -- set-password`/;

describe.each(DIALECTS)('no administrator yet (%s)', (dialect) => {
  let stack: Stack | undefined;
  afterAll(async () => {
    await stack?.stop();
  });

  it('every refused request says how to create one, until one exists', async () => {
    stack = await startStack(dialect, 'noadmin', { adminPassword: '', workers: false });
    const ask = (headers: Record<string, string>) => stack!.api.inject({ method: 'GET', url: '/api/v1/configs', headers });
    for (const headers of [{}, basic('admin', 'whatever-password'), basic('root', 'x'), { authorization: 'Bearer mq_not-a-token' }]) {
      const res = await ask(headers);
      expect(res.statusCode).toBe(401);
      expect(res.json().error.message).toMatch(NO_ADMIN);
    }
    await setAdminPassword(stack.app, 'now-there-is-one');
    const wrong = await ask(basic('admin', 'whatever-password'));
    expect(wrong.statusCode).toBe(401);
    expect(wrong.json().error.message).toBe('wrong administrator name or password');
    expect((await ask(basic('admin', 'now-there-is-one'))).statusCode).toBe(200);
    expect((await ask({})).json().error.message).toMatch(/^authentication required/);
  });
});

describe('a PostgreSQL database or role that does not exist', () => {
  it('stops start-up at once (no retries) with the createdb command', async () => {
    const name = `meshq_missing_${randomBytes(4).toString('hex')}`;
    const r = await runEntry(['src/bin/migrate.ts'], {
      DATABASE_URL: `postgres://postgres@127.0.0.1:5432/${name}`,
      SECRET_KEY: 'c'.repeat(64),
      DB_CONNECT_TIMEOUT_MS: '30000',
      LOG_LEVEL: 'info',
    });
    expect(r.code).toBe(1);
    expect(r.ms).toBeLessThan(15_000); // far below the 30 s it would have retried
    expect(r.stdout + r.stderr).not.toMatch(/retrying/);
    expect(r.stderr).toContain(`database "${name}" does not exist`);
    expect(r.stderr).toContain('SQLSTATE 3D000');
    expect(r.stderr).toContain(`\`createdb -h 127.0.0.1 -p 5432 -U postgres -O postgres ${name}\``);
  });

  it('a missing role stops start-up at once with createuser and createdb, and never shows the password', async () => {
    const role = `meshq_norole_${randomBytes(4).toString('hex')}`;
    const password = 'r0le-pa55word';
    const r = await runEntry(['src/bin/migrate.ts'], {
      DATABASE_URL: `postgres://${role}:${password}@127.0.0.1:5432/meshq`,
      SECRET_KEY: 'c'.repeat(64),
      DB_CONNECT_TIMEOUT_MS: '30000',
      LOG_LEVEL: 'info',
    });
    expect(r.code).toBe(1);
    expect(r.ms).toBeLessThan(15_000);
    expect(r.stdout + r.stderr).not.toMatch(/retrying/);
    expect(r.stderr).toMatch(/SQLSTATE (28000|28P01)/);
    expect(r.stderr).toContain(`\`createuser -h 127.0.0.1 -p 5432 -U postgres -P ${role}\``);
    expect(r.stderr).toContain(`\`createdb -h 127.0.0.1 -p 5432 -U postgres -O ${role} meshq\``);
    expect(r.stdout + r.stderr).not.toContain(password);
  });
});

describe('a port in use', () => {
  let db: TestDatabase | undefined;
  let blocker: Server | undefined;
  afterAll(async () => {
    await new Promise((r) => (blocker ? blocker.close(r) : r(undefined)));
    await db?.drop();
  });

  it.each([
    ['both', 'src/bin/both.ts'],
    ['api', 'src/bin/api.ts'],
  ])('`%s` stops with one line, and takes no job first', async (role, entry) => {
    db ??= await createTestDatabase('sqlite', 'portinuse');
    const held = await listening();
    blocker = held.server;
    const app = await bootstrap('test', db.config());
    const prefix = app.config.queuePrefix;
    try {
      const job = await app.queues.submit('config.create', { name: `waiting-${role}`, subnet: '10.70.0.0/24' }, { actor: 'admin' });
      const r = await runEntry([entry], { ...db.env, HOST: '127.0.0.1', PORT: String(held.port), QUEUE_PREFIX: prefix, LOG_LEVEL: 'warn' });
      expect(r.code).toBe(1);
      const lines = r.stderr.trim().split('\n');
      expect(lines).toEqual([`meshq ${role}: failed to start: port ${held.port} on 127.0.0.1 is already in use (another meshq, or another program, listens there): stop it or set PORT/HOST`]);
      expect((await app.queues.view((await app.queues.find(job.id!))!)).state).toBe('waiting');
    } finally {
      await new Promise((r) => held.server.close(r));
      blocker = undefined;
      await deletePrefix(prefix);
      await app.close();
    }
  });
});

describe.each(DIALECTS)('npm run admin -- set-password (%s)', (dialect) => {
  let db: TestDatabase | undefined;
  afterAll(async () => {
    await db?.drop();
  });

  const verify = async (password: string) => {
    const config = db!.config();
    const orm = await connectOrm(config);
    try {
      return await verifyAdmin({ uow: new UnitOfWork(orm, config.dialect), serverKey: parseServerKey(config.secretKey) }, 'admin', password);
    } finally {
      await orm.close(true);
    }
  };

  it('reads the password from a pipe, works without Redis, and never prints it', async () => {
    db = await createTestDatabase(dialect, 'adminpipe');
    const password = 'piped-admin-password';
    const r = await runEntry(['src/bin/admin.ts', 'set-password'], { ...db.env, REDIS_URL: `redis://127.0.0.1:${await closedPort()}`, LOG_LEVEL: 'info' }, { stdin: `${password}\n` });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('password of "admin" set\n');
    expect(r.stdout + r.stderr).not.toContain(password);
    expect(await verify(password)).toBe(true);

    const short = await runEntry(['src/bin/admin.ts', 'set-password'], db.env, { stdin: 'short\n' });
    expect(short.code).toBe(1);
    expect(short.stderr).toContain('at least 8 characters');
    expect(await verify(password)).toBe(true);

    const onCommandLine = await runEntry(['src/bin/admin.ts', 'set-password', 'visible-in-history'], db.env);
    expect(onCommandLine.code).toBe(2);
  }, 120_000);

  // `script` gives the command a pseudo-terminal, as a person at a terminal has.
  it('on a terminal, reads the password twice without echoing it', async () => {
    expect(spawnSync('script', ['--version']).status, 'script(1) (util-linux) runs the command on a pseudo-terminal').toBe(0);
    const password = 'typed-admin-password';
    const command = `${process.execPath} --import tsx src/bin/admin.ts set-password`;
    const child = spawn('script', ['-qec', command, '/dev/null'], {
      cwd: root,
      env: { PATH: process.env.PATH!, HOME: process.env.HOME!, TERM: 'dumb', ...db!.env, REDIS_URL: 'redis://127.0.0.1:1' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    const seen = (text: string) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no "${text}" in: ${out}`)), 30_000);
        const check = () => {
          if (!out.includes(text)) return;
          clearTimeout(timer);
          child.stdout.off('data', check);
          resolve();
        };
        child.stdout.on('data', check);
        check();
      });
    child.stdout.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((r) => child.on('exit', r));
    await seen('new password for "admin": ');
    child.stdin.write(`${password}\r`);
    await seen('again: ');
    child.stdin.write(`${password}\r`);
    expect(await exited).toBe(0);
    expect(out).toContain('password of "admin" set');
    expect(out).not.toContain(password);
    expect(await verify(password)).toBe(true);
  }, 120_000);
});
