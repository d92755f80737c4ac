/**
 * GET /api/v1/events over a real socket: a client sees a job's lifecycle in order and the
 * committed change it made, without secrets; after a disconnect it resumes with
 * Last-Event-ID and gets the events it missed, none twice; `types` filters; a quiet
 * stream gets keep-alive comments; closing the API ends open streams instead of waiting
 * for them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildApi } from '../../src/api/app.js';
import { DIALECTS } from '../support/db.js';
import { waitFor } from '../support/processes.js';
import { startStack, type Stack } from '../support/stack.js';

interface Sse {
  id?: string;
  event: string;
  data: Record<string, unknown>;
}

interface Client {
  status: number;
  events: Sse[];
  comments: string[];
  ended: () => boolean;
  close(): void;
}

/** A minimal EventSource: fetch, split on blank lines, parse fields. */
async function connect(url: string, headers: Record<string, string>): Promise<Client> {
  const abort = new AbortController();
  const res = await fetch(url, { headers, signal: abort.signal });
  const events: Sse[] = [];
  const comments: string[] = [];
  let ended = false;
  if (res.ok && res.body) {
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    void (async () => {
      let buffer = '';
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end: number;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const e: Partial<Sse> & { raw?: string } = {};
            for (const line of block.split('\n')) {
              if (line.startsWith(':')) comments.push(line.slice(1).trim());
              else if (line.startsWith('id: ')) e.id = line.slice(4);
              else if (line.startsWith('event: ')) e.event = line.slice(7);
              else if (line.startsWith('data: ')) e.data = JSON.parse(line.slice(6)) as Record<string, unknown>;
            }
            if (e.event) events.push(e as Sse);
          }
        }
      } catch {
        // aborted by the test
      }
      ended = true;
    })();
  } else {
    ended = true;
  }
  return { status: res.status, events, comments, ended: () => ended, close: () => abort.abort() };
}

const SECRETS = /privateKey|passwordHash|tokenHash|password|secret/i;

describe.each(DIALECTS)('event stream on %s', (dialect) => {
  let s: Stack;
  let base: string;

  beforeAll(async () => {
    s = await startStack(dialect, 'events', { adminPassword: 'events-admin-pw' });
    await s.api.listen({ host: '127.0.0.1', port: 0 });
    const address = s.api.server.address();
    base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/api/v1/events`;
  });

  afterAll(async () => {
    await s?.stop();
  });

  const ofJob = (c: Client, jobId: string) => c.events.filter((e) => e.data.jobId === jobId);
  const finished = (c: Client, jobId: string) => ofJob(c, jobId).some((e) => e.event === 'job.completed' || e.event === 'job.failed');

  let configId: string;

  it("streams a job's lifecycle in order and the change it committed, and resumes after a disconnect without losing one", async () => {
    const first = await connect(base, s.auth);
    expect(first.status).toBe(200);
    // The stream is open once its first comment (the starting cursor) arrived.
    await waitFor('stream open', async () => first.comments.length > 0, 10_000);

    const created = await s.job('config.create', { name: 'evt', subnet: '10.77.0.0/24' });
    expect(created.state).toBe('completed');
    configId = created.result!.id as string;
    await waitFor('config.create events', async () => finished(first, created.id) && ofJob(first, created.id).some((e) => e.event === 'config.create'), 15_000);
    const lifecycle = ofJob(first, created.id).filter((e) => e.event.startsWith('job.'));
    expect(lifecycle.map((e) => e.event)).toEqual(['job.queued', 'job.active', 'job.completed']);
    expect(lifecycle.every((e) => e.data.jobType === 'config.create')).toBe(true);
    expect(lifecycle[2]!.data.result).toMatchObject({ id: configId });
    const change = ofJob(first, created.id).find((e) => e.event === 'config.create')!;
    expect(change.data).toMatchObject({ jobId: created.id, actor: 'admin', id: configId });
    // Every event carries an id, and ids only grow.
    expect(first.events.every((e) => typeof e.id === 'string')).toBe(true);

    // Disconnect; a job runs while nobody listens; reconnect from the last id received.
    const lastId = first.events.at(-1)!.id!;
    const seenBefore = first.events.length;
    first.close();
    const missed = await s.job('node.create', { configId, name: 'while-away', kind: 'static' });
    expect(missed.state).toBe('completed');

    const second = await connect(base, { ...s.auth, 'last-event-id': lastId });
    expect(second.status).toBe(200);
    await waitFor('missed node.create events', async () => finished(second, missed.id) && ofJob(second, missed.id).some((e) => e.event === 'node.create'), 15_000);
    expect(ofJob(second, missed.id).filter((e) => e.event.startsWith('job.')).map((e) => e.event)).toEqual(['job.queued', 'job.active', 'job.completed']);
    // Nothing from before the disconnect comes again.
    expect(ofJob(second, created.id)).toEqual([]);
    expect(seenBefore).toBeGreaterThan(0);
    for (const e of [...first.events, ...second.events]) expect(JSON.stringify(e.data)).not.toMatch(SECRETS);
    second.close();
  });

  it('filters by type: node.* gives the committed node changes only', async () => {
    const client = await connect(`${base}?types=node.*`, s.auth);
    await waitFor('stream open', async () => client.comments.length > 0, 10_000);
    const job = await s.job('node.create', { configId, name: 'filtered', kind: 'static' });
    await waitFor('node.create change', async () => client.events.some((e) => e.event === 'node.create' && e.data.jobId === job.id), 15_000);
    expect(client.events.map((e) => e.event).every((t) => t.startsWith('node.'))).toBe(true);
    client.close();
  });

  it('streams job progress with the job\'s type', async () => {
    const client = await connect(`${base}?types=job.progress`, s.auth);
    await waitFor('stream open', async () => client.comments.length > 0, 10_000);
    const done = await s.job('settings.update', { values: { 'ui.progress': 1 } });
    // What a long job (a restore) does as it goes, through BullMQ as a processor would.
    await (await s.app.queues.find(done.id))!.updateProgress(42);
    await waitFor('job.progress', async () => client.events.some((e) => e.data.jobId === done.id), 15_000);
    expect(client.events.filter((e) => e.data.jobId === done.id)).toEqual([
      expect.objectContaining({ event: 'job.progress', data: { jobId: done.id, jobType: 'settings.update', queue: 'operations', progress: 42 } }),
    ]);
    client.close();
  });

  it('refuses a bad filter, a foreign Last-Event-ID and a caller without credentials', async () => {
    expect((await connect(`${base}?types=job.**`, s.auth)).status).toBe(400);
    expect((await connect(base, { ...s.auth, 'last-event-id': '12-0' })).status).toBe(400);
    expect((await connect(base, {})).status).toBe(401);
  });

  it('sends keep-alive comments on a quiet stream and ends open streams when the API closes', async () => {
    const api: FastifyInstance = await buildApi(s.app, { eventKeepAliveMs: 100 });
    await api.listen({ host: '127.0.0.1', port: 0 });
    const address = api.server.address();
    const client = await connect(`http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/api/v1/events?types=none`, s.auth);
    await waitFor('keep-alive', async () => client.comments.filter((c) => c === 'keep-alive').length >= 2, 10_000);
    const closing = api.close().then(() => 'closed');
    const bound = new Promise((r) => setTimeout(() => r('hung'), 5_000).unref());
    expect(await Promise.race([closing, bound])).toBe('closed');
    await waitFor('stream ended', async () => client.ended(), 5_000);
  });
});
