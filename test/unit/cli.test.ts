/**
 * The CLI's pure parts: its environment (MESHQ_*), the Server-Sent Events reader, and the
 * secret prompt's pipe path.
 */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { readCliEnv } from '../../src/cli/env.js';
import { UsageError } from '../../src/cli/errors.js';
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
