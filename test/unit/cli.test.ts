/**
 * The CLI's pure parts: its environment (MESHQ_*), the Server-Sent Events reader, the
 * secret prompt's pipe path, and how a job answer is read.
 */
import { createServer } from 'node:http';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { readCliEnv } from '../../src/cli/env.js';
import { ApiRefusal, UsageError } from '../../src/cli/errors.js';
import { ApiClient } from '../../src/cli/http.js';
import { readSecret } from '../../src/cli/prompt.js';
import { readSse, type SseEvent } from '../../src/cli/sse.js';

describe('readCliEnv', () => {
  it('defaults to the local API without credentials', () => {
    expect(readCliEnv({})).toEqual({ url: 'http://127.0.0.1:3000', credentials: undefined });
  });

  it('takes a token, or the administrator password with user admin by default', () => {
    expect(readCliEnv({ MESHQ_URL: 'https://meshq.example/', MESHQ_TOKEN: 'mq_x' })).toEqual({ url: 'https://meshq.example', credentials: { kind: 'bearer', token: 'mq_x' } });
    expect(readCliEnv({ MESHQ_PASSWORD: 'pw' }).credentials).toEqual({ kind: 'basic', user: 'admin', password: 'pw' });
    expect(readCliEnv({ MESHQ_URL: 'http://a:1' }, 'http://b:2').url).toBe('http://b:2');
  });

  it('names every bad variable as a usage error', () => {
    const err = (() => {
      try {
        readCliEnv({ MESHQ_URL: 'ftp://x', MESHQ_TOKEN: 't', MESHQ_PASSWORD: 'p' });
      } catch (e) {
        return e as UsageError;
      }
    })()!;
    expect(err).toBeInstanceOf(UsageError);
    expect(err.exitCode).toBe(2);
    expect(err.message).toContain('MESHQ_URL: must be an http:// or https:// URL');
    expect(err.message).toContain('MESHQ_TOKEN: set MESHQ_TOKEN or MESHQ_PASSWORD, not both');
    expect(() => readCliEnv({}, 'not a url')).toThrow(/--url: must be/);
  });
});

async function events(chunks: string[]): Promise<SseEvent[]> {
  const out: SseEvent[] = [];
  for await (const e of readSse(Readable.from(chunks.map((c) => Buffer.from(c))))) out.push(e);
  return out;
}

describe('readSse', () => {
  it('reads ids, types and multi-line data, across chunk boundaries and line endings', async () => {
    const got = await events([': keep-alive\n\nid: 1-0\nevent: job.qu', 'eued\ndata: {"a":1}\n\r', '\nid: 2-0\r\nevent: job.completed\r\ndata: x\r\ndata: y\r\n\r\n', 'data: no type\n\n']);
    expect(got).toEqual([
      { id: '1-0', event: 'job.queued', data: '{"a":1}' },
      { id: '2-0', event: 'job.completed', data: 'x\ny' },
      { id: '2-0', event: 'message', data: 'no type' },
    ]);
  });

  it('drops an event the stream cut off before its blank line', async () => {
    expect(await events(['id: 1\ndata: whole\n\nid: 2\ndata: cut'])).toEqual([{ id: '1', event: 'message', data: 'whole' }]);
  });
});

describe('readSecret from a pipe', () => {
  it('answers the first line without its line ending', async () => {
    expect(await readSecret('p: ', Readable.from(['secret-pw\r\nmore\n']))).toBe('secret-pw');
    expect(await readSecret('p: ', Readable.from(['no newline']))).toBe('no newline');
  });
});

describe('ApiClient.job', () => {
  /** A server that answers every request with `status` and `body`. */
  async function answering(status: number, body: unknown): Promise<{ client: ApiClient; close(): Promise<void> }> {
    const server = createServer((_req, res) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as { port: number };
    return { client: new ApiClient(`http://127.0.0.1:${port}`, undefined), close: () => new Promise((r) => server.close(() => r())) };
  }

  it('answers the job when it had already failed by the time the answer was written (422 with the job)', async () => {
    const failed = { id: 'j1', type: 'node.create', state: 'failed', error: { code: 'CONFLICT', message: 'a node named "twin" already exists' } };
    const s = await answering(422, failed);
    try {
      expect(await s.client.job('POST', '/api/v1/jobs/j1/retry')).toEqual(failed);
    } finally {
      await s.close();
    }
  });

  it('refuses a 422 that is not a job, and any other refusal', async () => {
    for (const [status, body] of [
      [422, { error: { code: 'CONFLICT', message: 'no' } }],
      [409, { id: 'j1', state: 'failed' }],
    ] as const) {
      const s = await answering(status, body);
      try {
        await expect(s.client.job('POST', '/api/v1/jobs')).rejects.toBeInstanceOf(ApiRefusal);
      } finally {
        await s.close();
      }
    }
  });
});
