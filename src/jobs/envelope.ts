/**
 * What a job's data holds in Redis, and why a worker may believe it.
 *
 * Redis is not an admin credential: anyone who can write to it could otherwise add a
 * `token.create` with actor `admin`. So every envelope carries an HMAC-SHA256 over its
 * job type, actor and payload (canonical JSON), under a key derived from the server key
 * that only meshq's API and workers hold. Whoever enqueues signs (queue client, broker
 * sync requests, the scheduled reconcile's template); the worker verifies before it does
 * anything else and refuses, permanently, a job it cannot verify.
 *
 * The signature is not a secret and carries none: the data stays readable in Bull Board.
 */
import { createHmac, createSecretKey, hkdfSync, timingSafeEqual, type KeyObject } from 'node:crypto';

export interface JobEnvelope {
  /** Who asked (admin name, `token:<id>`, `system`, `mqtt`), for the audit record. */
  actor: string;
  /** The validated payload. Never a secret. */
  payload: unknown;
  /** hex HMAC-SHA256 of canonical({type, actor, payload}). */
  sig: string;
}

/** Fixed label: the envelope key is used for nothing else the server key protects. */
const KEY_LABEL = 'meshq job envelope v1';

/**
 * The envelope key, derived once per process from the server key (HKDF-SHA256), as a
 * KeyObject: createHmac would otherwise import raw key bytes again on every job.
 */
export function envelopeKey(serverKey: Buffer): KeyObject {
  return createSecretKey(Buffer.from(hkdfSync('sha256', serverKey, Buffer.alloc(0), KEY_LABEL, 32)));
}

/**
 * Sorted-key JSON: the same value gives the same text whatever order its keys were
 * written in (and after a round trip through Redis).
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as object).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

function mac(key: KeyObject, type: string, actor: string, payload: unknown): Buffer {
  return createHmac('sha256', key).update(canonicalJson({ type, actor, payload })).digest();
}

export function signEnvelope(key: KeyObject, type: string, actor: string, payload: unknown): JobEnvelope {
  return { actor, payload, sig: mac(key, type, actor, payload).toString('hex') };
}

/** The envelope when `data` is one signed for `type` under `key`; undefined otherwise. */
export function verifyEnvelope(key: KeyObject, type: string, data: unknown): JobEnvelope | undefined {
  if (!data || typeof data !== 'object') return undefined;
  const { actor, payload, sig } = data as Partial<JobEnvelope>;
  if (typeof actor !== 'string' || typeof sig !== 'string' || !/^[0-9a-f]{64}$/.test(sig)) return undefined;
  const expected = mac(key, type, actor, payload);
  return timingSafeEqual(expected, Buffer.from(sig, 'hex')) ? { actor, payload, sig } : undefined;
}
