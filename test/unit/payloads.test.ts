import { createHmac, randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { JOBS, JOB_TYPES, PUBLIC_JOB_TYPES, jobOptions, retryDelay } from '../../src/jobs/table.js';
import { QUEUE_RULES } from '../../src/jobs/names.js';
import { SCOPES } from '../../src/domain/scopes.js';
import { canonicalJson, envelopeKey, signEnvelope, verifyEnvelope } from '../../src/jobs/envelope.js';
import * as payloads from '../../src/jobs/payloads.js';

const id = randomUUID();
const hash = 'a'.repeat(64);

/** A minimal valid payload for every schema. */
const VALID: Record<string, Record<string, unknown>> = {
  byId: { id },
  configCreate: { name: 'home', subnet: '10.0.0.0/24' },
  configUpdate: { id, name: 'home2' },
  nodeCreate: { configId: id, name: 'gw', kind: 'static' },
  nodeUpdate: { id, listenPort: 51820 },
  nodeRotateCredentials: { nodeId: id, passwordHash: hash, salt: 'b'.repeat(32) },
  nodePresence: { nodeId: id, online: true, at: '2025-01-31T12:00:00.000Z' },
  meshGenerate: { configId: id },
  linkCreate: { configId: id, fromNodeId: id, toNodeId: randomUUID() },
  portForwardCreate: { configId: id, fromNodeId: id, fromPort: 80, toNodeId: randomUUID(), toPort: 8080, protocol: 'tcp' },
  settingsUpdate: { values: { 'ui.theme': 'dark' } },
  tokenCreate: { id, name: 'ci', tokenHash: hash },
  brokerSync: {},
  nodePushConfig: { nodeId: id },
  nodePushConfigs: {},
  snapshotExport: {},
  snapshotRestore: { stagedId: id },
  retentionPrune: {},
};

const schemas = (Object.entries(payloads) as [string, unknown][]).filter((e): e is [string, z.ZodType] => e[1] instanceof z.ZodType);

describe('job payload schemas', () => {
  it('every job type uses an exported schema, and every schema has a sample here', () => {
    const exported = new Set(schemas.map(([, s]) => s));
    for (const type of JOB_TYPES) expect(exported.has(JOBS[type].schema), type).toBe(true);
    expect(schemas.map(([name]) => name).sort()).toEqual(Object.keys(VALID).sort());
  });

  describe.each(schemas)('%s', (name, schema) => {
    it('accepts its minimal payload', () => {
      const r = schema.safeParse(VALID[name]);
      expect(r.error?.issues).toBeUndefined();
    });

    it('rejects an unknown field', () => {
      const r = schema.safeParse({ ...VALID[name], password: 'hunter2' });
      expect(r.success).toBe(false);
      expect(r.error!.issues[0]!.code).toBe('unrecognized_keys');
    });

    it('is representable as JSON Schema, closed to extra fields', () => {
      for (const io of ['input', 'output'] as const) {
        const json = z.toJSONSchema(schema, { io }) as { type: string; additionalProperties: unknown };
        expect(json.type).toBe('object');
        expect(json.additionalProperties).toBe(false);
      }
    });
  });

  it('configCreate fills in listenPort 51820, no DNS, MTU 1420 and protocol wireguard', () => {
    expect(payloads.configCreate.parse(VALID.configCreate)).toEqual({
      name: 'home',
      subnet: '10.0.0.0/24',
      listenPort: 51820,
      dns: [],
      mtu: 1420,
      protocol: 'wireguard',
    });
  });

  it('configCreate refuses a subnet that is not a CIDR, awg with wireguard, an unknown protocol', () => {
    for (const bad of [{ subnet: '10.0.0.0' }, { subnet: 'banana/24' }, { awg: { jc: 3 } }, { protocol: 'ipsec' }, { listenPort: 0 }]) {
      expect(payloads.configCreate.safeParse({ ...VALID.configCreate, ...bad }).success, JSON.stringify(bad)).toBe(false);
    }
    expect(payloads.configCreate.safeParse({ ...VALID.configCreate, protocol: 'amneziawg', awg: { jc: 3 } }).success).toBe(true);
  });

  it('configUpdate needs a field to change and never takes the subnet', () => {
    expect(payloads.configUpdate.safeParse({ id }).success).toBe(false);
    expect(payloads.configUpdate.safeParse({ id, subnet: '10.1.0.0/24' }).success).toBe(false);
    expect(payloads.configUpdate.parse({ id, awg: null })).toEqual({ id, awg: null });
  });

  it('nodeUpdate clears the endpoint with null and needs a field to change', () => {
    expect(payloads.nodeUpdate.parse({ id, endpoint: null })).toEqual({ id, endpoint: null });
    expect(payloads.nodeUpdate.safeParse({ id }).success).toBe(false);
    expect(payloads.nodeUpdate.safeParse({ id, endpoint: 'host-without-port' }).success).toBe(false);
  });

  it('nodeCreate checks the kind, the address and the ids', () => {
    expect(payloads.nodeCreate.safeParse({ ...VALID.nodeCreate, kind: 'mobile' }).success).toBe(false);
    expect(payloads.nodeCreate.safeParse({ ...VALID.nodeCreate, address: '10.0.0.1/32' }).success).toBe(false);
    expect(payloads.nodeCreate.safeParse({ ...VALID.nodeCreate, configId: 'home' }).success).toBe(false);
    expect(payloads.nodeCreate.safeParse({ ...VALID.nodeCreate, address: 'fd00::2', endpoint: '[2001:db8::1]:51820' }).success).toBe(true);
  });

  it('nodeRotateCredentials takes a lowercase sha256 hex hash, never a password', () => {
    const ok = VALID.nodeRotateCredentials!;
    expect(payloads.nodeRotateCredentials.safeParse({ ...ok, passwordHash: 'A'.repeat(64) }).success).toBe(false);
    expect(payloads.nodeRotateCredentials.safeParse({ ...ok, passwordHash: 'a'.repeat(63) }).success).toBe(false);
    expect(payloads.nodeRotateCredentials.safeParse({ ...ok, salt: '' }).success).toBe(false);
  });

  it('nodePresence needs a boolean and an ISO date-time', () => {
    const ok = VALID.nodePresence!;
    expect(payloads.nodePresence.safeParse({ ...ok, at: '2025-01-31T13:00:00+01:00' }).success).toBe(true);
    expect(payloads.nodePresence.safeParse({ ...ok, at: '31/01/2025' }).success).toBe(false);
    expect(payloads.nodePresence.safeParse({ ...ok, online: 'yes' }).success).toBe(false);
  });

  it('nodeCreate and nodeUpdate take an agent-held public key only as wg(8) writes one', () => {
    const key = 'Fz7d0Cq0Ul1WgPq3v8b2vU8l3cS2JtJd3Vq1n2xQeU0=';
    expect(payloads.nodeCreate.safeParse({ ...VALID.nodeCreate, publicKey: key }).success).toBe(true);
    expect(payloads.nodeUpdate.safeParse({ id, publicKey: key }).success).toBe(true);
    for (const bad of ['', key.slice(1), `${key.slice(0, 42)}B=`, key.replace('=', '')]) {
      const r = payloads.nodeCreate.safeParse({ ...VALID.nodeCreate, publicKey: bad });
      expect(r.error?.issues[0]).toMatchObject({ path: ['publicKey'], message: expect.stringContaining('is not a WireGuard key') });
    }
  });

  it('linkCreate takes distinct CIDRs without host bits and a keepalive (25 s by default)', () => {
    const ok = VALID.linkCreate!;
    expect(payloads.linkCreate.parse(ok)).toEqual({ ...ok, persistentKeepalive: 25 });
    expect(payloads.linkCreate.safeParse({ ...ok, allowedIps: ['192.168.1.0/24', 'fd00::/64'] }).success).toBe(true);
    for (const allowedIps of [[], ['192.168.1.1/24'], ['10.0.0.0/8', '10.0.0.0/8'], ['nope']]) {
      expect(payloads.linkCreate.safeParse({ ...ok, allowedIps }).success, JSON.stringify(allowedIps)).toBe(false);
    }
  });

  it('meshGenerate keeps alive every 25 s unless told otherwise (0 or null: off)', () => {
    expect(payloads.meshGenerate.parse({ configId: id })).toEqual({ configId: id, persistentKeepalive: 25 });
    expect(payloads.meshGenerate.parse({ configId: id, persistentKeepalive: null }).persistentKeepalive).toBeNull();
    expect(payloads.meshGenerate.safeParse({ configId: id, persistentKeepalive: 70000 }).success).toBe(false);
  });

  it('portForwardCreate checks ports and protocol', () => {
    const ok = VALID.portForwardCreate!;
    expect(payloads.portForwardCreate.safeParse({ ...ok, toPort: 65536 }).success).toBe(false);
    expect(payloads.portForwardCreate.safeParse({ ...ok, protocol: 'icmp' }).success).toBe(false);
    expect(payloads.portForwardCreate.safeParse({ ...ok, protocol: undefined }).success).toBe(false);
  });

  it('settingsUpdate takes 1-100 keys of [A-Za-z0-9._-] up to 128 characters, any JSON value', () => {
    const parse = (values: unknown) => payloads.settingsUpdate.safeParse({ values }).success;
    expect(parse({ 'a.b_c-D9': { nested: [1, 'two', null, true] } })).toBe(true);
    expect(parse({ ['k'.repeat(128)]: 1 })).toBe(true);
    expect(parse({ ['k'.repeat(129)]: 1 })).toBe(false);
    expect(parse({ 'with space': 1 })).toBe(false);
    expect(parse({ 'ümlaut': 1 })).toBe(false);
    expect(parse({})).toBe(false);
    expect(parse(Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`k${i}`, i])))).toBe(true);
    expect(parse(Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`k${i}`, i])))).toBe(false);
  });

  it('tokenCreate defaults scopes to read (least privilege) and takes only a hash', () => {
    expect(payloads.tokenCreate.parse(VALID.tokenCreate)).toEqual({ ...VALID.tokenCreate, scopes: ['read'] });
    expect(payloads.tokenCreate.safeParse({ ...VALID.tokenCreate, tokenHash: 'mq_secret' }).success).toBe(false);
    expect(payloads.tokenCreate.safeParse({ ...VALID.tokenCreate, name: '' }).success).toBe(false);
  });

  it('names the field and the problem in its messages', () => {
    const r = payloads.configCreate.safeParse({ name: 'home', subnet: '10.0.0.0/24', listenPort: 70000 });
    expect(r.error!.issues[0]).toMatchObject({ path: ['listenPort'], message: '70000 is out of range 1-65535' });
    const u = payloads.byId.safeParse({ id: 'nope' });
    expect(u.error!.issues[0]!.message).toBe('must be a UUID (got "nope")');
  });
});

describe('the job table', () => {
  it('names a known scope for every job type', () => {
    for (const type of JOB_TYPES) expect(SCOPES, type).toContain(JOBS[type].scope);
    expect(JOBS['node.rotate-credentials'].scope).toBe('credentials');
    expect(JOBS['node.push-config'].scope).toBe('credentials');
    expect(JOBS['token.create'].scope).toBe('admin');
    expect(JOBS['snapshot.restore'].scope).toBe('snapshots');
    expect(JOBS['node.update'].scope).toBe('operate');
  });

  it('runs every exclusive job type on a globally serial queue', () => {
    const exclusive = JOB_TYPES.filter((t) => JOBS[t].exclusive);
    expect(exclusive).toEqual(['snapshot.restore']);
    for (const type of exclusive) expect(QUEUE_RULES[JOBS[type].queue].globallySerial, type).toBe(true);
  });

  it('keeps internal types out of the public ones', () => {
    for (const type of ['token.create', 'node.rotate-credentials', 'node.presence', 'broker.sync', 'snapshot.restore'] as const) {
      expect(PUBLIC_JOB_TYPES).not.toContain(type);
    }
    expect(PUBLIC_JOB_TYPES).toContain('config.create');
  });

  it('adds a broker sync with its own retries and coalescing, and other jobs with the default retries', () => {
    expect(jobOptions('broker.sync')).toMatchObject({ attempts: 50, deduplication: { id: 'broker-sync', keepLastIfActive: true } });
    // Retries for the window (JOB_RETRY_WINDOW_MS, default an hour), not a fixed handful.
    expect(jobOptions('node.update').attempts).toBeGreaterThan(60);
    expect(jobOptions('node.update')).toMatchObject({ backoff: { delay: 500 } });
    expect(jobOptions('node.update')).not.toHaveProperty('deduplication');
    const max = () => 0;
    expect([1, 2, 3].map((n) => retryDelay('node.update', n, max))).toEqual([500, 1000, 2000]);
    expect(retryDelay('node.update', 30, max)).toBe(60_000);
  });
});

describe('job envelopes', () => {
  const key = envelopeKey(Buffer.alloc(32, 7));
  const payload = { id, name: 'x', nested: { b: 1, a: [2, { d: 3, c: 4 }] } };
  /** An envelope as the first form was signed (before v2), written out here so it stays that form. */
  const signV1 = (type: string, actor: string, p: unknown) => ({
    actor,
    payload: p,
    sig: createHmac('sha256', key).update(canonicalJson({ type, actor, payload: p })).digest('hex'),
  });
  /** The same value with every object's keys in reverse order. */
  const reversed = (v: unknown): unknown =>
    Array.isArray(v) ? v.map(reversed) : v && typeof v === 'object' ? Object.fromEntries(Object.entries(v).reverse().map(([k, x]) => [k, reversed(x)])) : v;

  it('verify what was signed after a round trip through JSON (as BullMQ stores it)', () => {
    const signed = JSON.parse(JSON.stringify(signEnvelope(key, 'config.update', 'admin', payload)));
    expect(signed.v).toBe(2);
    expect(verifyEnvelope(key, 'config.update', signed)).toMatchObject({ v: 2, actor: 'admin', payload });
  });

  it('verify a v1 envelope (queued before v2) whatever the key order after a round trip', () => {
    const signed = JSON.parse(JSON.stringify(signV1('config.update', 'admin', payload)));
    const reordered = { ...signed, payload: reversed(signed.payload) };
    expect(verifyEnvelope(key, 'config.update', signed)).toMatchObject({ actor: 'admin', payload });
    expect(verifyEnvelope(key, 'config.update', reordered)).toBeDefined();
    expect(canonicalJson(reordered.payload)).toBe(canonicalJson(payload));
  });

  it('refuse a changed type, actor or payload, a missing or malformed signature, and another key', () => {
    for (const signed of [signEnvelope(key, 'token.revoke', 'token:abc', { id }), signV1('token.revoke', 'token:abc', { id })]) {
      expect(verifyEnvelope(key, 'token.create', signed)).toBeUndefined();
      expect(verifyEnvelope(key, 'token.revoke', { ...signed, actor: 'admin' })).toBeUndefined();
      expect(verifyEnvelope(key, 'token.revoke', { ...signed, payload: { id: randomUUID() } })).toBeUndefined();
      expect(verifyEnvelope(key, 'token.revoke', { ...signed, payload: { id, extra: 1 } })).toBeUndefined();
      expect(verifyEnvelope(key, 'token.revoke', { actor: signed.actor, payload: signed.payload })).toBeUndefined();
      expect(verifyEnvelope(key, 'token.revoke', { ...signed, sig: 'zz' })).toBeUndefined();
      expect(verifyEnvelope(key, 'token.revoke', null)).toBeUndefined();
      expect(verifyEnvelope(envelopeKey(Buffer.alloc(32, 8)), 'token.revoke', signed)).toBeUndefined();
      expect(verifyEnvelope(key, 'token.revoke', signed)).toBeDefined();
    }
  });

  it('refuse a v2 envelope with any byte of its stored JSON changed', () => {
    const stored = JSON.stringify(signEnvelope(key, 'node.update', 'admin', { id, listenPort: 51820 }));
    expect(verifyEnvelope(key, 'node.update', JSON.parse(stored))).toBeDefined();
    let parsed = 0;
    for (let i = 0; i < stored.length; i++) {
      for (const c of ['0', '1', 'a', 'x', '"', ' ']) {
        if (stored[i] === c) continue;
        let changed: unknown;
        try {
          changed = JSON.parse(stored.slice(0, i) + c + stored.slice(i + 1));
        } catch {
          continue; // not JSON: BullMQ could not even hand it to the worker
        }
        parsed++;
        const seen = verifyEnvelope(key, 'node.update', changed);
        // A change that leaves the same value (whitespace) verifies the same value; any other is refused.
        if (seen) expect(JSON.stringify(changed)).toBe(stored);
      }
    }
    expect(parsed).toBeGreaterThan(100);
  });

  it('refuse a signature moved between forms, and an unknown form', () => {
    const v2 = signEnvelope(key, 'token.revoke', 'token:abc', { id });
    const v1 = signV1('token.revoke', 'token:abc', { id });
    const { v: _v, ...v2WithoutVersion } = v2;
    expect(verifyEnvelope(key, 'token.revoke', v2WithoutVersion)).toBeUndefined();
    expect(verifyEnvelope(key, 'token.revoke', { ...v1, v: 2 })).toBeUndefined();
    expect(verifyEnvelope(key, 'token.revoke', { ...v2, v: 3 })).toBeUndefined();
    expect(verifyEnvelope(key, 'token.revoke', { ...v2, v: '2' })).toBeUndefined();
  });

  it('refuse a v2 payload whose keys were reordered after signing (the signed text is the stored one)', () => {
    const signed = signEnvelope(key, 'config.update', 'admin', payload);
    expect(verifyEnvelope(key, 'config.update', { ...signed, payload: reversed(payload) })).toBeUndefined();
  });
});
