/**
 * Redis is not an admin credential: a job written straight into Redis with BullMQ's own
 * Queue.add (as anyone who can reach Redis could) is refused by the worker before it
 * runs, permanently, and applies nothing; a job submitted through meshq runs, and so does
 * one queued in the envelope's first form (v1) by the code before v2.
 */
import { createHash, createHmac, randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canonicalJson, envelopeKey, signEnvelope } from '../../src/jobs/envelope.js';
import { QUEUES } from '../../src/jobs/names.js';
import { redisConnection } from '../../src/jobs/redis.js';
import { createRepositories } from '../../src/repositories/index.js';
import { DIALECTS } from '../support/db.js';
import { memorySink, startStack, type Stack } from '../support/stack.js';

describe.each(DIALECTS)('job envelopes on %s', (dialect) => {
  let stack: Stack;
  let connection: Redis;
  let forger: Queue;
  let log = '';

  beforeAll(async () => {
    stack = await startStack(dialect, 'envelope', { adminPassword: 'envelope-admin-pw', logDestination: memorySink((t) => (log += t)), env: { LOG_LEVEL: 'warn' } });
    connection = redisConnection(stack.app.config.redisUrl);
    forger = new Queue(QUEUES.operations, { connection, prefix: stack.app.config.queuePrefix });
  });

  afterAll(async () => {
    await forger?.close();
    await connection?.quit();
    await stack?.stop();
  });

  const tokenExists = (id: string) => createRepositories(stack.app.uow.fork(), { serverKey: stack.app.serverKey }).tokens.exists(id);
  const tokenPayload = (id: string) => ({ id, name: `forged-${id.slice(0, 8)}`, tokenHash: createHash('sha256').update(id).digest('hex'), scopes: ['admin' as const] });

  /** A v1 envelope, signed as the code before v2 signed it (sorted-key JSON of type, actor, payload). */
  const signV1 = (type: string, actor: string, payload: unknown) => ({
    actor,
    payload,
    sig: createHmac('sha256', envelopeKey(stack.app.serverKey)).update(canonicalJson({ type, actor, payload })).digest('hex'),
  });
  /** A v2 envelope as meshq signs it, with one byte of the token's name changed afterwards. */
  const oneByteChanged = (id: string) => {
    const stored = JSON.stringify(signEnvelope(envelopeKey(stack.app.serverKey), 'token.create', 'admin', tokenPayload(id)));
    const at = stored.indexOf('forged-') + 'forged'.length;
    return JSON.parse(`${stored.slice(0, at)}_${stored.slice(at + 1)}`) as object;
  };

  const forge = async (data: object) => {
    const job = await forger.add('token.create', data, { jobId: randomUUID(), attempts: 5 });
    return stack.app.queues.waitFor(job, 20_000);
  };

  it.each([
    ['without a signature', (id: string) => ({ actor: 'admin', payload: tokenPayload(id) })],
    ['with a made-up signature', (id: string) => ({ actor: 'admin', payload: tokenPayload(id), sig: 'a'.repeat(64) })],
    ['signed under another key', (id: string) => signEnvelope(envelopeKey(Buffer.alloc(32, 1)), 'token.create', 'admin', tokenPayload(id))],
    [
      'with the signature of another actor',
      (id: string) => ({ ...signEnvelope(envelopeKey(stack.app.serverKey), 'token.create', 'token:someone', tokenPayload(id)), actor: 'admin' }),
    ],
    ['signed by meshq, then one byte of its payload changed', oneByteChanged],
    ['in the first form (v1) with the signature of another actor', (id: string) => ({ ...signV1('token.create', 'token:someone', tokenPayload(id)), actor: 'admin' })],
    ['with a v2 signature presented as v1 (its form removed)', (id: string) => {
      const { v: _v, ...rest } = signEnvelope(envelopeKey(stack.app.serverKey), 'token.create', 'admin', tokenPayload(id));
      return rest;
    }],
  ])('refuses a token.create written straight into Redis %s: failed for good, no token', async (_, envelope) => {
    const id = randomUUID();
    const view = await forge(envelope(id));
    expect(view.state).toBe('failed');
    expect(view.error?.code).toBe('UNVERIFIED');
    expect(view.attempts).toBe(1); // permanent: not retried despite attempts: 5
    expect(await tokenExists(id)).toBe(false);
    const line = log.split('\n').find((l) => l.includes(view.id));
    expect(line).toContain('refused a job whose envelope is not signed by meshq');
  });

  it('runs a token.create submitted through meshq', async () => {
    const id = randomUUID();
    const job = await stack.app.queues.submit('token.create', tokenPayload(id), { actor: 'admin' });
    const view = await stack.app.queues.waitFor(job, 20_000);
    expect(view.state, JSON.stringify(view.error)).toBe('completed');
    expect(await tokenExists(id)).toBe(true);
  });

  it('runs a token.create queued in the first envelope form (v1) before a deploy', async () => {
    const id = randomUUID();
    const view = await forge(signV1('token.create', 'admin', tokenPayload(id)));
    expect(view.state, JSON.stringify(view.error)).toBe('completed');
    expect(await tokenExists(id)).toBe(true);
  });

  it('keeps no secret in the envelope: the signature is an HMAC, the payload only a hash', async () => {
    const id = randomUUID();
    const job = await stack.app.queues.submit('token.revoke', { id }, { actor: 'admin' });
    expect(Object.keys(job.data as object).sort()).toEqual(['actor', 'payload', 'sig', 'v']);
    expect((job.data as { sig: string }).sig).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(job.data)).not.toContain(stack.app.serverKey.toString('hex'));
  });
});
