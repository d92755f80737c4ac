/**
 * How agents' acknowledgements are read: `{"revision": n}` on their own
 * `meshq/<configId>/<nodeId>/config/applied`, a positive integer revision, extra fields
 * allowed; anything else is rejected with a reason and nothing throws.
 */
import { describe, expect, it } from 'vitest';
import { configAppliedTopic, isAppliedTopic, MAX_APPLIED_PAYLOAD_BYTES, parseAppliedMessage, statusTopic } from '../../src/broker/topics.js';

const CONFIG = '0194a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b';
const NODE = '0194a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2c';
const TOPIC = configAppliedTopic(CONFIG, NODE);
const buf = (s: string) => Buffer.from(s, 'utf8');

describe('parseAppliedMessage', () => {
  it('reads the revision, with or without more fields, and lower-cases the ids', () => {
    expect(parseAppliedMessage(TOPIC, buf('{"revision":7}'))).toEqual({ kind: 'applied', configId: CONFIG, nodeId: NODE, revision: 7 });
    expect(parseAppliedMessage(TOPIC, buf('{"revision": 1, "agent": "1.2.3"}'))).toMatchObject({ kind: 'applied', revision: 1 });
    expect(parseAppliedMessage(configAppliedTopic(CONFIG.toUpperCase(), NODE.toUpperCase()), buf('{"revision":2}'))).toMatchObject({ configId: CONFIG, nodeId: NODE });
  });

  it.each([
    ['not JSON', 'applied', /not JSON/],
    ['no revision', '{}', /revision/],
    ['a string revision', '{"revision":"3"}', /revision/],
    ['revision 0', '{"revision":0}', /revision/],
    ['a negative revision', '{"revision":-1}', /revision/],
    ['a fractional revision', '{"revision":1.5}', /revision/],
    ['a revision past 32 bits', '{"revision":2147483648}', /revision/],
    ['an array', '[1]', /revision/],
    ['JSON null', 'null', /revision/],
  ])('rejects %s', (_what, payload, reason) => {
    const parsed = parseAppliedMessage(TOPIC, buf(payload));
    expect(parsed.kind).toBe('rejected');
    expect(parsed.kind === 'rejected' && parsed.reason).toMatch(reason);
  });

  it('rejects an oversized payload before parsing it, and ids that are not UUIDs', () => {
    const big = buf(JSON.stringify({ revision: 1, pad: 'x'.repeat(MAX_APPLIED_PAYLOAD_BYTES) }));
    expect(parseAppliedMessage(TOPIC, big)).toMatchObject({ kind: 'rejected', reason: expect.stringMatching(/exceeds/) });
    expect(parseAppliedMessage(`meshq/${CONFIG}/not-a-node/config/applied`, buf('{"revision":1}'))).toMatchObject({ kind: 'rejected', reason: expect.stringMatching(/UUID/) });
  });

  it('tells acknowledgement topics from the others', () => {
    expect(isAppliedTopic(TOPIC)).toBe(true);
    expect(isAppliedTopic(statusTopic(CONFIG, NODE))).toBe(false);
    expect(isAppliedTopic(`meshq/${CONFIG}/${NODE}/config/push`)).toBe(false);
    expect(isAppliedTopic(`${TOPIC}/extra`)).toBe(false);
    expect(parseAppliedMessage(statusTopic(CONFIG, NODE), buf('{"revision":1}'))).toMatchObject({ kind: 'rejected' });
  });
});
