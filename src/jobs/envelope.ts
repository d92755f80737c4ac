/**
 * What a job's data holds in Redis, and why a worker may believe it.
 *
 * Redis is not an admin credential: anyone who can write to it could otherwise add a
 * `token.create` with actor `admin`. So every envelope carries an HMAC-SHA256 over its
 * job type, actor and payload, under a key derived from the server key that only
 * meshq's API and workers hold. Whoever enqueues signs (queue client, broker sync
 * requests, the scheduled jobs' templates); the worker verifies before it does anything
 * else and refuses, permanently, a job it cannot verify.
 *
 * Two forms of the signed text, told apart by the envelope's `v`:
 * - v2 (what is signed now): `JSON.stringify([2, type, actor, payload])`. BullMQ stores
 *   the data as JSON.stringify and hands the worker JSON.parse of it, which keeps key
 *   order, so the worker's JSON.stringify of the payload is the text that was signed.
 *   Nothing is sorted: the sorting copy of every object was most of the envelope's cost
 *   on each job. A payload whose keys were reordered after signing does not verify.
 * - v1 (no `v`): canonical JSON (sorted keys) of `{type, actor, payload}`. Jobs signed
 *   before v2 existed may still be waiting, retrying, delayed or held by a job scheduler
 *   when the new code starts; they still verify.
 * The two texts can never be equal (one is an array, the other an object), so a
 * signature of one form is worthless in the other, and removing or adding `v` only
 * makes a job unverifiable.
 *
 * The signature is not a secret and carries none: the data stays readable in Bull Board.
 */
import { createHmac, createSecretKey, hkdfSync, timingSafeEqual, type KeyObject } from 'node:crypto';

export interface JobEnvelope {
  /** Form of the signed text: 2; absent on envelopes signed in the first form (v1). */
  v?: 2;
  /** Who asked (admin name, `token:<id>`, `system`, `mqtt`), for the audit record. */
  actor: string;
  /** The validated payload. Never a secret. */
  payload: unknown;
  /** hex HMAC-SHA256 of the signed text of its form (above). */
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

const SIGNED_TEXT = {
  1: (type: string, actor: string, payload: unknown) => canonicalJson({ type, actor, payload }),
  2: (type: string, actor: string, payload: unknown) => JSON.stringify([2, type, actor, payload]),
};

function mac(key: KeyObject, text: string): Buffer {
  return createHmac('sha256', key).update(text).digest();
}

export function signEnvelope(key: KeyObject, type: string, actor: string, payload: unknown): JobEnvelope {
  return { v: 2, actor, payload, sig: mac(key, SIGNED_TEXT[2](type, actor, payload)).toString('hex') };
}

const SIG = /^[0-9a-f]{64}$/;

/** The envelope when `data` is one signed for `type` under `key` (either form); undefined otherwise. */
export function verifyEnvelope(key: KeyObject, type: string, data: unknown): JobEnvelope | undefined {
  if (!data || typeof data !== 'object') return undefined;
  const { v, actor, payload, sig } = data as Partial<JobEnvelope> & { v?: unknown };
  if (typeof actor !== 'string' || typeof sig !== 'string' || !SIG.test(sig)) return undefined;
  const form = v === undefined ? 1 : v === 2 ? 2 : undefined;
  if (form === undefined) return undefined;
  const expected = mac(key, SIGNED_TEXT[form](type, actor, payload));
  if (!timingSafeEqual(expected, Buffer.from(sig, 'hex'))) return undefined;
  return form === 2 ? { v: 2, actor, payload, sig } : { actor, payload, sig };
}
