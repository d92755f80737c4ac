/**
 * How inbound MQTT messages are classified: agent statuses and EMQX client events become
 * presence (a client event only when its user name is its client id), everything else is
 * ignored or rejected, and nothing throws. How presence coalesces per node.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { PresenceCoalescer, type PresenceEvent } from '../../src/broker/presence.js';
import { MAX_PRESENCE_PAYLOAD_BYTES, parsePresenceMessage, statusTopic } from '../../src/broker/topics.js';

const CONFIG = '0194a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b';
const NODE = '0194a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2c';
const buf = (s: string) => Buffer.from(s, 'utf8');

describe('parsePresenceMessage', () => {
  it('reads online and offline from a status topic, plain or as JSON', () => {
    expect(parsePresenceMessage(statusTopic(CONFIG, NODE), buf('online'))).toEqual({ kind: 'presence', nodeId: NODE, configId: CONFIG, online: true });
    expect(parsePresenceMessage(statusTopic(CONFIG, NODE), buf(' offline\n'))).toEqual({ kind: 'presence', nodeId: NODE, configId: CONFIG, online: false });
    expect(parsePresenceMessage(statusTopic(CONFIG, NODE), buf('{"status":"online"}'))).toEqual({ kind: 'presence', nodeId: NODE, configId: CONFIG, online: true });
    expect(parsePresenceMessage(statusTopic(CONFIG, NODE), buf('{"status":"offline","agent":"1.2.3"}'))).toEqual({
      kind: 'presence',
      nodeId: NODE,
      configId: CONFIG,
      online: false,
    });
  });

  it('lower-cases node ids spelled in upper case', () => {
    expect(parsePresenceMessage(statusTopic(CONFIG, NODE.toUpperCase()), buf('online'))).toMatchObject({ nodeId: NODE });
  });

  it('reads EMQX client events of agents whose user name is their client id, and ignores other clients', () => {
    const client = `node-${NODE}`;
    const connected = JSON.stringify({ clientid: client, username: client, ipaddress: '10.0.0.9', proto_ver: 5, connected_at: 1 });
    expect(parsePresenceMessage(`$SYS/brokers/emqx@10.0.0.1/clients/${client}/connected`, buf(connected))).toEqual({
      kind: 'presence',
      nodeId: NODE,
      configId: null,
      online: true,
    });
    const disconnected = JSON.stringify({ clientid: client, username: client, reason: 'normal', disconnected_at: 2 });
    expect(parsePresenceMessage(`$SYS/brokers/emqx@10.0.0.1/clients/${client}/disconnected`, buf(disconnected))).toEqual({
      kind: 'presence',
      nodeId: NODE,
      configId: null,
      online: false,
    });
    expect(parsePresenceMessage('$SYS/brokers/emqx@10.0.0.1/clients/meshq-abc/connected', buf('{}'))).toMatchObject({ kind: 'ignored' });
    expect(parsePresenceMessage('$SYS/brokers/emqx@10.0.0.1/clients/node-nope/connected', buf('{}'))).toMatchObject({ kind: 'rejected' });
  });

  it.each([
    ['another node\'s user name', { clientid: `node-${NODE}`, username: `node-${CONFIG}` }],
    ['no user name', { clientid: `node-${NODE}` }],
    ['a null user name', { clientid: `node-${NODE}`, username: null }],
    ['a clientid that differs from the topic', { clientid: `node-${CONFIG}`, username: `node-${CONFIG}` }],
    ['a payload that is not JSON', 'connected'],
    ['an empty payload', ''],
  ])('ignores an EMQX client event with %s (a client id is not bound to its user)', (_label, body) => {
    const payload = buf(typeof body === 'string' ? body : JSON.stringify(body));
    for (const event of ['connected', 'disconnected']) {
      expect(parsePresenceMessage(`$SYS/brokers/emqx@10.0.0.1/clients/node-${NODE}/${event}`, payload)).toMatchObject({ kind: 'ignored' });
    }
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

describe('PresenceCoalescer', () => {
  const OTHER = '0194a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2d';
  let events: PresenceEvent[];
  let coalescer: PresenceCoalescer;
  const t0 = new Date('2026-01-02T03:04:05.000Z');
  const at = (ms: number) => new Date(t0.getTime() + ms);

  beforeEach(() => {
    vi.useFakeTimers({ now: t0 });
    events = [];
    coalescer = new PresenceCoalescer((e) => events.push(e), 1_000);
  });
  afterEach(() => {
    coalescer.flush();
    vi.useRealTimers();
  });

  it('passes a node\'s first message on at once and the latest of a burst when the window closes', () => {
    coalescer.push(NODE, CONFIG, true, at(0));
    expect(events.map((e) => e.online)).toEqual([true]);
    for (let i = 1; i <= 199; i++) coalescer.push(NODE, CONFIG, i % 2 === 0, at(i));
    expect(events).toHaveLength(1);
    vi.advanceTimersByTime(1_000);
    // The 199th message (odd: offline) is the latest state.
    expect(events.map((e) => [e.online, e.at.getTime() - t0.getTime()])).toEqual([
      [true, 0],
      [false, 199],
    ]);
    // Nothing pending: the window ends and the next message passes at once again.
    vi.advanceTimersByTime(1_000);
    expect(coalescer.open).toBe(0);
    coalescer.push(NODE, CONFIG, true, at(2_500));
    expect(events).toHaveLength(3);
  });

  it('keeps nodes apart', () => {
    coalescer.push(NODE, CONFIG, true, at(0));
    coalescer.push(OTHER, CONFIG, false, at(1));
    coalescer.push(NODE, CONFIG, false, at(2));
    expect(events.map((e) => [e.nodeId, e.online])).toEqual([
      [NODE, true],
      [OTHER, false],
    ]);
    vi.advanceTimersByTime(1_000);
    expect(events.map((e) => [e.nodeId, e.online])).toEqual([
      [NODE, true],
      [OTHER, false],
      [NODE, false],
    ]);
  });

  it('names an event by node, state and window, the same in every process', () => {
    const other: PresenceEvent[] = [];
    const second = new PresenceCoalescer((e) => other.push(e), 1_000);
    coalescer.push(NODE, CONFIG, true, at(100));
    // The second process sees the same message a few milliseconds later.
    second.push(NODE, CONFIG, true, at(137));
    expect(other[0]!.key).toBe(events[0]!.key);
    expect(events[0]!.key).toBe(`${NODE}-online-${Math.floor(at(100).getTime() / 1_000)}`);
    second.flush();
  });

  it('never gives two events of the same state one key when the other state came between', () => {
    // online, offline, online as fast as the windows allow: three distinct keys.
    coalescer.push(NODE, CONFIG, true, at(0));
    coalescer.push(NODE, CONFIG, false, at(10));
    vi.advanceTimersByTime(1_000);
    coalescer.push(NODE, CONFIG, true, at(1_001));
    vi.advanceTimersByTime(1_000);
    expect(events.map((e) => e.online)).toEqual([true, false, true]);
    expect(new Set(events.map((e) => e.key)).size).toBe(3);
  });

  it('passes every pending state on when flushed, and nothing after', () => {
    coalescer.push(NODE, CONFIG, true, at(0));
    coalescer.push(NODE, CONFIG, false, at(5));
    coalescer.flush();
    expect(events.map((e) => e.online)).toEqual([true, false]);
    coalescer.push(NODE, CONFIG, true, at(10));
    vi.advanceTimersByTime(5_000);
    expect(events).toHaveLength(2);
  });
});
