/**
 * A restore upload is spooled to a temporary file as it arrives (never held in memory),
 * checked and staged from there, and the file is gone afterwards on every path: a restore
 * that was accepted, a file that was refused, a body with a part missing, and a client
 * that went away half-way through the upload, and a file over the upload limit, which is
 * refused without being held in memory; what a killed process left there is removed when
 * meshq starts. This test process gets a temporary
 * directory of its own (TMPDIR), so what it finds there is its own uploads' only.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_SNAPSHOT_UPLOAD_BYTES } from '../../src/api/routes/snapshots.js';
import { DIALECTS } from '../support/db.js';
import { encodeTestSnapshot, generateBusinessTables, multipartBody, uploadSnapshot } from '../support/snapshot-data.js';
import { startStack, type Stack } from '../support/stack.js';
import { ownTmpdir } from '../support/tmpdir.js';

const ADMIN = 'spool-admin-password';
const PASSWORD = 'spool-file-password';
const ownTmp = ownTmpdir('meshq-spool-test-');

const spools = () => readdirSync(tmpdir()).filter((name) => name.startsWith('meshq-upload-'));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, check: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** The stack's API on a real socket (once), for bodies that must arrive as a stream. */
async function listening(stack: Stack): Promise<AddressInfo> {
  if (!stack.api.server.listening) await stack.api.listen({ host: '127.0.0.1', port: 0 });
  return stack.api.server.address() as AddressInfo;
}

describe.each(DIALECTS)('restore uploads spooled to a temporary file on %s', (dialect) => {
  let s: Stack;
  let file: Buffer;

  let leftBehind: string;

  beforeAll(async () => {
    // What a killed process would leave: a spool directory whose pid has ended.
    const gonePid = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
    leftBehind = join(tmpdir(), `meshq-upload-${gonePid}-x${dialect.slice(0, 5)}`);
    mkdirSync(leftBehind);
    writeFileSync(join(leftBehind, 'spool'), 'an upload nobody will finish');
    s = await startStack(dialect, 'upload-spool', { adminPassword: ADMIN, workers: false });
    file = await encodeTestSnapshot(generateBusinessTables({ configs: 1, nodesPerConfig: 4, audit: 3000 }), PASSWORD);
  });
  afterAll(async () => {
    await s?.stop();
  });

  it('removes at start-up the spool directory a killed process left', () => {
    expect(existsSync(leftBehind)).toBe(false);
  });

  it('leaves no temporary file after an accepted upload', async () => {
    expect(tmpdir()).toBe(ownTmp);
    const res = await uploadSnapshot(s.api, s.auth, file, PASSWORD);
    expect(res.statusCode, res.body).toBe(202);
    expect(spools()).toEqual([]);
  });

  it('leaves no temporary file after a refused file, a wrong password or a missing field', async () => {
    expect((await uploadSnapshot(s.api, s.auth, Buffer.from('not a snapshot'), PASSWORD)).statusCode).toBe(400);
    expect((await uploadSnapshot(s.api, s.auth, file, 'wrong password')).statusCode).toBe(400);
    const noPassword = multipartBody([{ name: 'file', value: file, filename: 'snapshot.meshq' }]);
    const res = await s.api.inject({ method: 'POST', url: '/api/v1/snapshots/restore', payload: noPassword.payload, headers: { ...s.auth, ...noPassword.headers } });
    expect(res.statusCode).toBe(400);
    expect(res.json<{ error: { message: string } }>().error.message).toMatch(/"password" field is missing/);
    expect(spools()).toEqual([]);
  });

  it('removes the temporary file of an upload whose client goes away half-way', async () => {
    const { port } = await listening(s);
    const body = multipartBody([
      { name: 'password', value: PASSWORD },
      { name: 'file', value: file, filename: 'snapshot.meshq' },
    ]);
    const req = request({
      host: '127.0.0.1',
      port,
      method: 'POST',
      path: '/api/v1/snapshots/restore',
      headers: { ...s.auth, ...body.headers, 'content-length': String(body.payload.length) },
    });
    req.on('error', () => undefined);
    // Half the body, then nothing more until the spool file exists: the upload is under way.
    req.write(body.payload.subarray(0, Math.floor(body.payload.length / 2)));
    await until('the upload to be spooled', () => spools().length > 0);
    req.destroy();
    await until('the spool file to be removed', () => spools().length === 0);
    expect(spools()).toEqual([]);
  });
  it('refuses a file over the upload limit with 413, streamed, and keeps nothing', async () => {
    const { port } = await listening(s);
    const boundary = '----meshqOverLimit';
    const head = Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="password"\r\n\r\n${PASSWORD}\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.meshq"\r\nContent-Type: application/octet-stream\r\n\r\n`,
    );
    const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
    const chunk = Buffer.alloc(1024 * 1024, 0x5a);
    const chunks = MAX_SNAPSHOT_UPLOAD_BYTES / chunk.length + 8;
    const rssBefore = process.memoryUsage().rss;
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 50);
    try {
      const answer = await new Promise<{ status: number; body: string }>((done, fail) => {
        const req = request(
          {
            host: '127.0.0.1',
            port,
            method: 'POST',
            path: '/api/v1/snapshots/restore',
            headers: {
              ...s.auth,
              'content-type': `multipart/form-data; boundary=${boundary}`,
              'content-length': String(head.length + chunks * chunk.length + tail.length),
            },
          },
          (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (d: string) => (body += d));
            res.on('end', () => done({ status: res.statusCode ?? 0, body }));
          },
        );
        // The server may answer and close before the whole body is sent: that is its answer.
        req.on('error', fail);
        req.write(head);
        let sent = 0;
        const more = (): void => {
          while (sent < chunks) {
            sent++;
            if (!req.write(chunk)) return void req.once('drain', more);
          }
          req.end(tail);
        };
        more();
      });
      expect(answer.status, answer.body).toBe(413);
      expect(JSON.parse(answer.body)).toMatchObject({ error: { code: 'PAYLOAD_TOO_LARGE', message: expect.stringMatching(/larger than the upload limit/) } });
    } finally {
      clearInterval(sampler);
    }
    // Half a gigabyte went through; far less than that was ever held at once.
    expect(rssPeak - rssBefore).toBeLessThan(MAX_SNAPSHOT_UPLOAD_BYTES / 4);
    await until('the spool file to be removed', () => spools().length === 0);
  });
});
