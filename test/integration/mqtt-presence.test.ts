/**
 * Presence over the real Mosquitto: an agent's retained `online` turns its node online,
 * its last will turns it offline when its socket dies, last-seen moves forward, and
 * hostile or malformed messages are logged, dropped and change nothing (and crash
 * nothing). A flood of statuses from one node coalesces into a few jobs and audits only
 * changes. EMQX-shaped `$SYS` client events count only when the user name is the client
 * id. The workers run in this process with MQTT enabled; their broker sync talks to the
 * EMQX double.
 *
 * Topics are `meshq/<configId>/<nodeId>/...` with fresh UUIDs, so this file shares the
 * broker with any other test without collisions; retained statuses are cleared at the end.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { v7 as uuidv7 } from 'uuid';
import { statusTopic } from '../../src/broker/topics.js';
import { startWorkerMqttLink } from '../../src/jobs/worker.js';
import { createRepositories } from '../../src/repositories/index.js';
import type { NodeView } from '../../src/repositories/nodes.js';
import { QUEUES } from '../../src/jobs/names.js';
import { DIALECTS } from '../support/db.js';
import { startEmqxDouble, type EmqxDouble } from '../support/emqx-double.js';
import { SHARED_MQTT_URL, startTestBroker, type TestBroker } from '../support/mosquitto.js';
import { waitFor } from '../support/processes.js';
import { mqttEnv, startStack, type Stack } from '../support/stack.js';

interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

const WARN = 40;

async function mqttClient(opts: Parameters<typeof connect>[1] = {}, url = SHARED_MQTT_URL): Promise<MqttClient> {
  const client = connect(url, { reconnectPeriod: 0, ...opts });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  return client;
}

describe.each(DIALECTS)('MQTT presence on %s', (dialect) => {
  let emqx: EmqxDouble;
  let s: Stack;
  const logs: LogLine[] = [];
  const clients: MqttClient[] = [];
  const retainedTopics = new Set<string>();
  let configId: string;

  beforeAll(async () => {
    emqx = await startEmqxDouble();
    const capture = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as LogLine) });
    s = await startStack(dialect, 'mqtt_presence', {
      adminPassword: 'presence-admin-pw',
      env: mqttEnv(emqx),
      app: (app) => ({ ...app, log: capture }),
    });
    await s.pool!.mqtt!.ready();
    const config = await s.job('config.create', { name: 'presence', subnet: '10.77.0.0/24' });
    configId = config.result!.id as string;
  });

  afterAll(async () => {
    // Leave nothing retained on the shared broker.
    if (retainedTopics.size > 0) {
      const cleaner = await mqttClient();
      for (const topic of retainedTopics) await cleaner.publishAsync(topic, '', { qos: 1, retain: true });
      await cleaner.endAsync();
    }
    for (const c of clients) c.end(true);
    await s?.stop();
    await emqx?.close();
  });

  const newNode = async (name: string): Promise<string> => {
    const job = await s.job('node.create', { configId, name, kind: 'dynamic' });
    expect(job.state, JSON.stringify(job.error)).toBe('completed');
    return job.result!.id as string;
  };

  const readNode = (id: string): Promise<NodeView | undefined> =>
    createRepositories(s.app.uow.fork(), { serverKey: s.app.serverKey }).nodes.get(id);

  const nodeWhere = (id: string, what: string, pred: (n: NodeView) => boolean) =>
    waitFor(what, async () => {
      const n = await readNode(id);
      return n && pred(n) ? n : undefined;
    }, 20_000, 50);

  /** An agent: client id `node-<id>`, last will `offline` (retained) on its status topic. */
  const agent = async (nodeId: string): Promise<MqttClient> => {
    const topic = statusTopic(configId, nodeId);
    retainedTopics.add(topic);
    const client = await mqttClient({ clientId: `node-${nodeId}`, will: { topic, payload: Buffer.from('offline'), qos: 1, retain: true } });
    clients.push(client);
    return client;
  };

  it('an agent publishing a retained online turns its node online; its last will turns it offline; last-seen advances', async () => {
    const nodeId = await newNode('agent-a');
    expect(await readNode(nodeId)).toMatchObject({ online: false, lastSeenAt: null });

    const client = await agent(nodeId);
    await client.publishAsync(statusTopic(configId, nodeId), 'online', { qos: 1, retain: true });
    const online = await nodeWhere(nodeId, 'the node to turn online', (n) => n.online);
    expect(online.lastSeenAt).not.toBeNull();

    // The socket dies without a DISCONNECT: the broker publishes the last will.
    client.stream.destroy();
    const offline = await nodeWhere(nodeId, 'the last will to turn the node offline', (n) => !n.online);
    expect(Date.parse(offline.lastSeenAt!)).toBeGreaterThan(Date.parse(online.lastSeenAt!));

    // Each change of state is one audit row.
    const audit = await createRepositories(s.app.uow.fork(), { serverKey: s.app.serverKey }).audit.list(
      { entityId: nodeId, action: 'node.presence' },
      { limit: 50 },
    );
    expect(audit.items.map((r) => r.actor)).toEqual(['mqtt', 'mqtt']);
  });

  it('accepts the JSON form {"status": ...}', async () => {
    const nodeId = await newNode('agent-json');
    const client = await agent(nodeId);
    await client.publishAsync(statusTopic(configId, nodeId), '{"status":"online"}', { qos: 1, retain: true });
    const online = await nodeWhere(nodeId, 'the node to turn online', (n) => n.online);
    await new Promise((r) => setTimeout(r, 20));
    await client.publishAsync(statusTopic(configId, nodeId), '{"status":"offline","agent":"1.0"}', { qos: 1, retain: true });
    const offline = await nodeWhere(nodeId, 'the node to turn offline', (n) => !n.online);
    expect(Date.parse(offline.lastSeenAt!)).toBeGreaterThan(Date.parse(online.lastSeenAt!));
    await client.endAsync();
  });

  it('drops hostile and malformed messages with a warning and changes nothing; an unknown node fails NOT_FOUND', async () => {
    const victim = await newNode('victim');
    const sentinel = await newNode('sentinel');
    const victimAgent = await agent(victim);
    await victimAgent.publishAsync(statusTopic(configId, victim), 'online', { qos: 1, retain: true });
    const before = await nodeWhere(victim, 'the victim to be online', (n) => n.online);

    const unknown = uuidv7();
    const hostile: [topic: string, payload: string | Buffer][] = [
      [statusTopic(configId, victim), 'garbage'],
      [statusTopic(configId, victim), '{"status":'],
      [statusTopic(configId, victim), '{"status":"maybe"}'],
      // Would read as "offline" if the size bound did not come first.
      [statusTopic(configId, victim), 'offline' + ' '.repeat(4000) + 'X'.repeat(4000)],
      [statusTopic(configId, victim), Buffer.from([0xff, 0xfe, 0x00])],
      [`meshq/not-a-config/${victim}/status`, 'offline'],
      [`meshq/${configId}/node-${victim}/status`, 'offline'],
      [statusTopic(configId, unknown), 'offline'],
    ];
    const attacker = await mqttClient({ clientId: `attacker-${uuidv7()}` });
    clients.push(attacker);
    for (const [topic, payload] of hostile) await attacker.publishAsync(topic, payload, { qos: 1 });
    // Messages of one publisher arrive in order: once the sentinel's status is in, so is
    // everything published before it.
    await attacker.publishAsync(statusTopic(configId, sentinel), 'online', { qos: 1 });
    await nodeWhere(sentinel, 'the sentinel to turn online', (n) => n.online);

    const dropped = () => logs.filter((l) => l.level === WARN && l.msg === 'MQTT message dropped' && String(l.topic).includes(victim));
    await waitFor('7 drop warnings', async () => dropped().length >= 7, 10_000, 50);
    const lines = dropped();
    expect(lines).toHaveLength(7);
    for (const line of lines) {
      expect(line.reason).toEqual(expect.any(String));
      // Never the body beyond a short prefix.
      expect(JSON.stringify(line).length).toBeLessThan(600);
      expect(String(line.prefix).length).toBeLessThanOrEqual(33);
    }
    expect(lines.some((l) => l.bytes === 8007 && String(l.reason).includes('exceeds'))).toBe(true);

    // The unknown node's event reached a job, which failed permanently with NOT_FOUND.
    const failed = await waitFor('the unknown node\'s presence job to fail', async () => {
      const jobs = await s.app.queues.queue(QUEUES.operations).getJobs(['failed'], 0, 200);
      return jobs.find((j) => j?.name === 'node.presence' && (j.data as { payload: { nodeId: string } }).payload.nodeId === unknown);
    }, 10_000, 100);
    expect(failed.failedReason).toMatch(/^\[NOT_FOUND\] node .* does not exist/);
    expect(failed.attemptsMade).toBe(1);

    // Nothing changed for the victim, and the link is still up.
    expect(await readNode(victim)).toEqual(before);
    expect(s.pool!.mqtt!.connected).toBe(true);
    await victimAgent.endAsync();
  });

  it('several workers seeing the same status enqueue one job for it', async () => {
    const nodeId = await newNode('dedupe');
    const client = await agent(nodeId);
    await client.publishAsync(statusTopic(configId, nodeId), 'online', { qos: 1, retain: true });
    await nodeWhere(nodeId, 'the node to turn online', (n) => n.online);
    // A second subscriber (a second worker process) receives the retained status again.
    const second = startWorkerMqttLink({ config: s.app.config, log: pino({ level: 'silent' }), queues: s.app.queues });
    try {
      await second.ready();
      await new Promise((r) => setTimeout(r, 500));
    } finally {
      await second.close();
    }
    const jobs = await s.app.queues.queue(QUEUES.operations).getJobs(['completed', 'waiting', 'active', 'delayed'], 0, 500);
    const ids = jobs.filter((j) => j?.name === 'node.presence' && (j.data as { payload: { nodeId: string } }).payload.nodeId === nodeId).map((j) => j.id);
    // Same window: one job. A window boundary between the two receptions: two, harmless.
    expect(ids.length).toBeGreaterThanOrEqual(1);
    expect(ids.length).toBeLessThanOrEqual(2);
    expect(ids.every((id) => id!.startsWith(`presence-${nodeId}-online-`))).toBe(true);
    await client.endAsync();
  });

  it('200 statuses from one node become a few jobs, end in its last state, and audit only changes', async () => {
    const nodeId = await newNode('flood');
    const client = await agent(nodeId);
    // Starts offline; alternates, the first offline (no change) and the last online.
    for (let i = 0; i < 200; i++) {
      await client.publishAsync(statusTopic(configId, nodeId), i % 2 === 1 ? 'online' : 'offline', { qos: 1, retain: i === 199 });
    }
    const presenceJobs = async () =>
      (await s.app.queues.queue(QUEUES.operations).getJobs(['completed', 'failed', 'waiting', 'active', 'delayed'], 0, 2000)).filter(
        (j) => j?.name === 'node.presence' && (j.data as { payload: { nodeId: string } }).payload.nodeId === nodeId,
      );
    await nodeWhere(nodeId, 'the node to end online', (n) => n.online);
    // The coalescing window is a second: after two quiet ones nothing can still be pending.
    await new Promise((r) => setTimeout(r, 2_200));
    await waitFor('every presence job to finish', async () => {
      const states = await Promise.all((await presenceJobs()).map((j) => j.getState()));
      return states.every((st) => st === 'completed');
    }, 10_000, 100);
    const jobs = await presenceJobs();
    expect(jobs.length).toBeGreaterThanOrEqual(2);
    expect(jobs.length).toBeLessThanOrEqual(8);
    expect(await readNode(nodeId)).toMatchObject({ online: true });

    const audit = await createRepositories(s.app.uow.fork(), { serverKey: s.app.serverKey }).audit.list(
      { entityId: nodeId, action: 'node.presence' },
      { limit: 500 },
    );
    const states = [...audit.items].reverse().map((r) => (r.detail as { online: boolean }).online);
    // Only changes: the states alternate, starting from the node's initial offline.
    expect(states.length).toBeGreaterThanOrEqual(1);
    expect(states.length).toBeLessThanOrEqual(jobs.length);
    states.forEach((online, i) => expect(online).toBe(i % 2 === 0));
    expect(states.at(-1)).toBe(true);
    await client.endAsync();
  });
});

describe.each(DIALECTS)('EMQX client events ($SYS) on %s', (dialect) => {
  // Mosquitto publishes no per-client events and refuses $SYS from clients, so this
  // stack's broker is a Mosquitto of the test's own whose $SYS/brokers/# is bridged in
  // from a prefix on the shared broker: the events arrive as real $SYS messages.
  const feed = `meshq-test-sys/${uuidv7()}/`;
  let broker: TestBroker;
  let emqx: EmqxDouble;
  let s: Stack;
  let publisher: MqttClient;
  let configId: string;
  const logs: LogLine[] = [];

  beforeAll(async () => {
    broker = await startTestBroker({ sysFeedPrefix: feed });
    emqx = await startEmqxDouble();
    const capture = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as LogLine) });
    s = await startStack(dialect, 'mqtt_sys_presence', {
      adminPassword: 'sys-presence-admin-pw',
      env: { ...mqttEnv(emqx), MQTT_URL: broker.url },
      app: (app) => ({ ...app, log: capture }),
    });
    await s.pool!.mqtt!.ready();
    configId = (await s.job('config.create', { name: 'sys', subnet: '10.76.0.0/24' })).result!.id as string;
    publisher = await mqttClient();
    // The bridge connects in the background: probe until an event reaches the link.
    await waitFor('the $SYS bridge', async () => {
      await publisher.publishAsync(`${feed}brokers/emqx@probe/clients/meshq-probe/connected`, '{}', { qos: 1 });
      await new Promise((r) => setTimeout(r, 100));
      return logs.some((l) => String(l.topic ?? '').includes('meshq-probe'));
    }, 20_000, 50);
  });

  afterAll(async () => {
    await publisher?.endAsync();
    await s?.stop();
    await emqx?.close();
    await broker?.close();
  });

  const newNode = async (name: string): Promise<string> => {
    const job = await s.job('node.create', { configId, name, kind: 'dynamic' });
    expect(job.state, JSON.stringify(job.error)).toBe('completed');
    return job.result!.id as string;
  };
  const readNode = (id: string) => createRepositories(s.app.uow.fork(), { serverKey: s.app.serverKey }).nodes.get(id);
  const event = (clientId: string, kind: 'connected' | 'disconnected', username: string | null) =>
    publisher.publishAsync(
      `${feed}brokers/emqx@10.0.0.1/clients/${clientId}/${kind}`,
      JSON.stringify({ clientid: clientId, username, ipaddress: '10.0.0.9', proto_name: 'MQTT', proto_ver: 5, ts: Date.now() }),
      { qos: 1 },
    );

  it('a connected event whose username differs from its client id changes nothing; a matching one counts', async () => {
    const victim = await newNode('victim');
    const attacker = await newNode('attacker');
    const sentinel = await newNode('sentinel');
    const before = await readNode(victim);

    // Node "attacker" logs in with its own user name but the victim's client id.
    await event(`node-${victim}`, 'connected', `node-${attacker}`);
    await event(`node-${victim}`, 'connected', null);
    // Then a genuine event: once it has been applied, the two before it were handled too.
    await event(`node-${sentinel}`, 'connected', `node-${sentinel}`);
    await waitFor('the sentinel to turn online', async () => (await readNode(sentinel))?.online === true, 20_000, 50);

    expect(await readNode(victim)).toEqual(before);
    const ignored = logs.filter((l) => l.msg === 'MQTT message ignored' && String(l.topic).includes(victim));
    expect(ignored.map((l) => l.reason)).toEqual([
      'client event whose username differs from its client id',
      'client event whose username differs from its client id',
    ]);
    const jobs = await s.app.queues.queue(QUEUES.operations).getJobs(['completed', 'failed', 'waiting', 'active', 'delayed'], 0, 500);
    expect(jobs.some((j) => j?.name === 'node.presence' && (j.data as { payload: { nodeId: string } }).payload.nodeId === victim)).toBe(false);

    // The genuine disconnected event turns the sentinel offline again.
    await new Promise((r) => setTimeout(r, 20));
    await event(`node-${sentinel}`, 'disconnected', `node-${sentinel}`);
    await waitFor('the sentinel to turn offline', async () => (await readNode(sentinel))?.online === false, 20_000, 50);
  });
});
