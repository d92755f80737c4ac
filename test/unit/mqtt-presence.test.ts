/**
 * How inbound MQTT messages are classified: agent statuses and EMQX client events become
 * presence, everything else is ignored or rejected, and nothing throws.
 */
import { describe, expect, it } from 'vitest';
import {
  MAX_PRESENCE_PAYLOAD_BYTES,
  parsePresenceMessage,
  PresenceJobIds,
  statusTopic,
} from '../../src/broker/mqtt-link.js';

const CONFIG = '0194a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b';
const NODE = '0194a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2c';
const buf = (s: string) => Buffer.from(s, 'utf8');

describe('parsePresenceMessage', () => {
  it('reads online and offline from a status topic, plain or as JSON', () => {
    expect(parsePresenceMessage(statusTopic(CONFIG, NODE), buf('online'))).toEqual({ kind: 'presence', nodeId: NODE, online: true });
    expect(parsePresenceMessage(statusTopic(CONFIG, NODE), buf(' offline\n'))).toEqual({ kind: 'presence', nodeId: NODE, online: false });
    expect(parsePresenceMessage(statusTopic(CONFIG, NODE), buf('{"status":"online"}'))).toEqual({ kind: 'presence', nodeId: NODE, online: true });
    expect(parsePresenceMessage(statusTopic(CONFIG, NODE), buf('{"status":"offline","agent":"1.2.3"}'))).toEqual({
      kind: 'presence',
      nodeId: NODE,
      online: false,
    });
  });

  it('lower-cases node ids spelled in upper case', () => {
    expect(parsePresenceMessage(statusTopic(CONFIG, NODE.toUpperCase()), buf('online'))).toMatchObject({ nodeId: NODE });
  });

  it('reads EMQX client events of agents and ignores other clients', () => {
    expect(parsePresenceMessage(`$SYS/brokers/emqx@10.0.0.1/clients/node-${NODE}/connected`, buf('{"clientid":"x"}'))).toEqual({
      kind: 'presence',
      nodeId: NODE,
      online: true,
    });
    expect(parsePresenceMessage(`$SYS/brokers/emqx@10.0.0.1/clients/node-${NODE}/disconnected`, buf('{}'))).toEqual({
      kind: 'presence',
      nodeId: NODE,
      online: false,
    });
    expect(parsePresenceMessage('$SYS/brokers/emqx@10.0.0.1/clients/meshq-abc/connected', buf('{}'))).toMatchObject({ kind: 'ignored' });
    expect(parsePresenceMessage('$SYS/brokers/emqx@10.0.0.1/clients/node-nope/connected', buf('{}'))).toMatchObject({ kind: 'rejected' });
  });

  it('ignores a cleared retained status (empty payload)', () => {
    expect(parsePresenceMessage(statusTopic(CONFIG, NODE), Buffer.alloc(0))).toMatchObject({ kind: 'ignored' });
  });

  it.each([
    ['not JSON', statusTopic(CONFIG, NODE), 'garbage'],
    ['broken JSON', statusTopic(CONFIG, NODE), '{"status":'],
    ['an unknown status', statusTopic(CONFIG, NODE), '{"status":"maybe"}'],
    ['a JSON array', statusTopic(CONFIG, NODE), '["online"]'],
    ['a prototype-polluting object', statusTopic(CONFIG, NODE), '{"__proto__":{"status":"online"}}'],
    ['a node id that is not a UUID', `meshq/${CONFIG}/not-a-uuid/status`, 'online'],
    ['a config id that is not a UUID', `meshq/x/${NODE}/status`, 'online'],
    ['too many levels', `meshq/${CONFIG}/${NODE}/status/extra`, 'online'],
    ['another leaf', `meshq/${CONFIG}/${NODE}/config/push`, 'online'],
    ['a foreign topic', 'other/topic', 'online'],
    ['a malformed $SYS topic', `$SYS/brokers/x/clients/node-${NODE}/subscribed`, '{}'],
  ])('rejects %s', (_label, topic, payload) => {
    expect(parsePresenceMessage(topic, buf(payload))).toMatchObject({ kind: 'rejected' });
  });

  it('rejects a payload over 1 KiB even when it would read as a status', () => {
    const padded = buf('offline' + ' '.repeat(MAX_PRESENCE_PAYLOAD_BYTES));
    expect(parsePresenceMessage(statusTopic(CONFIG, NODE), padded)).toMatchObject({ kind: 'rejected', reason: expect.stringContaining('exceeds') });
    expect(parsePresenceMessage(statusTopic(CONFIG, NODE), buf('online'.padEnd(MAX_PRESENCE_PAYLOAD_BYTES)))).toMatchObject({ kind: 'presence' });
  });

  it('survives binary garbage', () => {
    expect(parsePresenceMessage(statusTopic(CONFIG, NODE), Buffer.from([0xff, 0xfe, 0x00, 0x7b]))).toMatchObject({ kind: 'rejected' });
  });
});

describe('PresenceJobIds', () => {
  it('gives one id per node, state and second, numbering repeats within the second', () => {
    const ids = new PresenceJobIds();
    const t = new Date('2026-01-02T03:04:05.100Z');
    const sec = Math.floor(t.getTime() / 1000);
    expect(ids.next(NODE, true, t)).toBe(`presence-${NODE}-online-${sec}`);
    expect(ids.next(NODE, false, new Date(t.getTime() + 300))).toBe(`presence-${NODE}-offline-${sec}`);
    expect(ids.next(NODE, true, new Date(t.getTime() + 600))).toBe(`presence-${NODE}-online-${sec}-2`);
    expect(ids.next(NODE, true, new Date(t.getTime() + 1000))).toBe(`presence-${NODE}-online-${sec + 1}`);
  });

  it('agrees between two processes that saw the same messages', () => {
    const a = new PresenceJobIds();
    const b = new PresenceJobIds();
    const t = new Date('2026-01-02T03:04:05.000Z');
    const seq = [true, false, true, true].map((online, i) => [online, new Date(t.getTime() + i * 100)] as const);
    expect(seq.map(([o, at]) => a.next(NODE, o, at))).toEqual(seq.map(([o, at]) => b.next(NODE, o, new Date(at.getTime() + 37))));
  });
});
