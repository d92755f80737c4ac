/**
 * Committed jobs' events are written in batches without the jobs waiting for them: every
 * event handed over reaches the stream once, in the order handed over, with its fields,
 * whether it went alone or in a batch; flush() waits for all of them; a write that fails
 * is reported, not thrown at the job. Redis only (no database involved).
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { CommittedEvents, eventsStreamKey } from '../../src/jobs/events.js';
import { REDIS_URL } from '../support/db.js';
import { deletePrefix } from '../support/redis.js';

const prefix = `meshq-test-events-${randomUUID().slice(0, 8)}`;
const redis = new Redis(REDIS_URL);

afterAll(async () => {
  await deletePrefix(prefix);
  redis.disconnect();
});

describe('committed events', () => {
  it('writes every event once and in order, in one batch', async () => {
    const errors: unknown[] = [];
    const events = new CommittedEvents(redis, prefix, (err) => errors.push(err));
    const ids = Array.from({ length: 50 }, (_, i) => `node-${i}`);
    for (const [i, id] of ids.entries()) {
      events.publish({ jobId: `job-${i}`, type: 'node.update', actor: 'admin', payload: { id, listenPort: 1 }, result: { id } });
    }
    await events.flush();
    expect(errors).toEqual([]);
    const stream = await redis.xrange(eventsStreamKey(prefix), '-', '+');
    expect(stream).toHaveLength(50);
    const decoded = stream.map(([, fields]) => ({ type: fields[1], data: JSON.parse(fields[3]!) as Record<string, string> }));
    expect(decoded.map((e) => e.data.jobId)).toEqual(ids.map((_, i) => `job-${i}`));
    expect(decoded.every((e) => e.type === 'node.update')).toBe(true);
    expect(decoded[7]!.data).toMatchObject({ jobId: 'job-7', actor: 'admin', id: 'node-7' });
    expect(decoded[7]!.data).not.toHaveProperty('listenPort'); // ids only
  });

  it('writes an event handed over alone without a flush, and those that follow within the window with it', async () => {
    const key = `${prefix}:window`;
    const events = new CommittedEvents(redis, key, () => undefined);
    // Counts the commands that write events (the connection itself is real).
    const calls = { xadd: 0, eval: 0 };
    const counted = Object.create(redis) as Redis;
    counted.xadd = ((...args: Parameters<Redis['xadd']>) => (calls.xadd++, redis.xadd(...args))) as Redis['xadd'];
    counted.eval = ((...args: Parameters<Redis['eval']>) => (calls.eval++, redis.eval(...args))) as Redis['eval'];
    Object.assign(events, { connection: counted });
    events.publish({ jobId: 'w-0', type: 'node.update', actor: 'admin', payload: { id: 'n' }, result: {} });
    await new Promise((r) => setTimeout(r, 1));
    for (let i = 1; i < 5; i++) events.publish({ jobId: `w-${i}`, type: 'node.update', actor: 'admin', payload: { id: 'n' }, result: {} });
    const deadline = Date.now() + 5_000;
    while ((await redis.xlen(eventsStreamKey(key))) < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    const stream = await redis.xrange(eventsStreamKey(key), '-', '+');
    expect(stream.map(([, f]) => (JSON.parse(f[3]!) as { jobId: string }).jobId)).toEqual(['w-0', 'w-1', 'w-2', 'w-3', 'w-4']);
    expect(calls).toEqual({ xadd: 0, eval: 1 });
    await events.flush();
  });

  it('reports a write that fails instead of throwing at the job', async () => {
    const broken = new Redis(REDIS_URL, { lazyConnect: true, enableOfflineQueue: false });
    const errors: { err: unknown; n: number }[] = [];
    const events = new CommittedEvents(broken, prefix, (err, n) => errors.push({ err, n }));
    expect(() => events.publish({ jobId: 'j', type: 'config.create', actor: 'admin', payload: {}, result: { id: 'c' } })).not.toThrow();
    await events.flush();
    expect(errors).toHaveLength(1);
    expect(errors[0]!.n).toBe(1);
    broken.disconnect();
  });
});
