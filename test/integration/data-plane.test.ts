/**
 * The data plane follows the database, through a real Mosquitto the test runs itself (so
 * it can stop it) and the EMQX contract double: pushes after every change, coalesced per
 * node; revisions that move only when a node's content changes; at-least-once delivery
 * across a broker outage; agents' acknowledgements recorded (stale, future and malformed
 * ones ignored and logged); the lagging nodes in the API and in /metrics; a batch whose
 * broker dies part-way through: what was acknowledged and committed stays, what was not
 * stays requested, and every node ends with its own configuration.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Job } from 'bullmq';
import { connect, type MqttClient } from 'mqtt';
import { configAppliedTopic, statusTopic } from '../../src/broker/topics.js';
import { readPeers, type PushMessage } from '../../src/jobs/processors/push-config.js';
import { createRepositories } from '../../src/repositories/index.js';
import { QUEUES } from '../../src/jobs/names.js';
import { DIALECTS } from '../support/db.js';
import { startEmqxDouble, type EmqxDouble } from '../support/emqx-double.js';
import { startTestBroker, type TestBroker } from '../support/mosquitto.js';
import { waitFor } from '../support/processes.js';
import { eventsStreamKey } from '../../src/jobs/events.js';
import { encodeTestSnapshot, generateBusinessTables, uploadSnapshot } from '../support/snapshot-data.js';
import { memorySink, mqttEnv, startStack, type Stack } from '../support/stack.js';

interface Received {
  at: number;
  nodeId: string;
  revision: number;
  body: PushMessage;
}

interface NodeRead {
  id: string;
  name: string;
  endpoint: string | null;
  sync: { desired: number; applied: number | null; appliedAt: string | null };
}

describe.each(DIALECTS)('the data plane on %s', (dialect) => {
  let broker: TestBroker;
  let emqx: EmqxDouble;
  let s: Stack;
  let agent: MqttClient;
  let logs = '';
  /** Sees each log line as it is written, before the code after the log call runs. */
  let onLogLine: ((line: string) => void) | undefined;
  const received: Received[] = [];
  let configId: string;
  let ids: { a: string; b: string; c: string };

  beforeAll(async () => {
    // The batch test below kills the broker the moment it acknowledged a page: what it
    // acknowledged must have left for the agents by then (see maxInflightMessages).
    broker = await startTestBroker({ maxInflightMessages: 0 });
    emqx = await startEmqxDouble();
    s = await startStack(dialect, 'data_plane', {
      adminPassword: 'data-plane-admin-password',
      // Debug: the batch test below acts on the line a page's publish logs once acknowledged.
      env: { ...mqttEnv(emqx), MQTT_URL: broker.url, LOG_LEVEL: 'debug' },
      logDestination: memorySink((t) => {
        logs += t;
        onLogLine?.(t);
      }),
      // Reconnects at least 2 s apart: the outage test below brings the broker back right
      // after a failed attempt, so the agents' client (every 50 ms) has subscribed again
      // well before meshq's link can connect and publish.
      workerOptions: { mqttLinkOptions: { minReconnectMs: 2_500, maxReconnectMs: 2_500 } },
    });
    await s.pool!.mqtt!.ready();

    // Every agent of the mesh, as one client: it hears each node's pushes.
    agent = connect(broker.url, { reconnectPeriod: 50, resubscribe: true });
    agent.on('error', () => undefined);
    agent.on('message', (_topic, payload) => {
      const body = JSON.parse(payload.toString('utf8')) as PushMessage;
      received.push({ at: Date.now(), nodeId: body.nodeId, revision: body.revision, body });
    });
    await new Promise<void>((resolve) => agent.once('connect', () => resolve()));
    await agent.subscribeAsync('meshq/+/+/config/push', { qos: 1 });

    configId = (await s.job('config.create', { name: 'plane', subnet: '10.81.0.0/24' })).result!.id as string;
    const create = async (name: string, endpoint: string) => {
      const job = await s.job('node.create', { configId, name, kind: 'dynamic', endpoint });
      expect(job.state, JSON.stringify(job.error)).toBe('completed');
      return job.result!.id as string;
    };
    ids = { a: await create('a', 'a.example.com:51820'), b: await create('b', 'b.example.com:51820'), c: await create('c', 'c.example.com:51820') };
    expect(await s.job('mesh.generate', { configId })).toMatchObject({ state: 'completed', result: { created: 3 } });
    await settled();
    for (const id of Object.values(ids)) expect(last(id)?.body.peers).toHaveLength(2);
  });

  afterAll(async () => {
    await agent?.endAsync(true);
    await s?.stop();
    await emqx?.close();
    await broker?.close();
  });

  const last = (nodeId: string) => received.filter((m) => m.nodeId === nodeId).at(-1);
  const node = (id: string) => s.get<NodeRead>(`/api/v1/nodes/${id}`);
  const peerEndpoint = (m: Received | undefined, peerId: string) => m?.body.peers.find((p) => p.nodeId === peerId)?.endpoint;

  /** No push waiting, delayed or running, then a moment for the last message to arrive. */
  async function settled(): Promise<void> {
    const queue = s.app.queues.queue(QUEUES.brokerSync);
    await waitFor(
      'the pushes to settle',
      async () => {
        const jobs = await queue.getJobs(['waiting', 'active', 'delayed', 'prioritized'], 0, 1000);
        return jobs.filter((j) => j?.name === 'node.push-config' || j?.name === 'node.push-configs').length === 0;
      },
      60_000,
      50,
    );
    await new Promise((r) => setTimeout(r, 300));
  }

  it("node.update of an endpoint reaches its peers with a higher revision; the node's own content is unchanged, so it gets nothing", async () => {
    const before = { a: (await node(ids.a)).sync.desired, b: (await node(ids.b)).sync.desired, c: (await node(ids.c)).sync.desired };
    received.length = 0;
    expect(await s.job('node.update', { id: ids.a, endpoint: 'a2.example.com:51820' })).toMatchObject({ state: 'completed' });
    await waitFor('the new endpoint at both peers', async () => [ids.b, ids.c].every((p) => peerEndpoint(last(p), ids.a) === 'a2.example.com:51820'), 10_000, 20);
    await settled();
    expect(last(ids.b)!.revision).toBe(before.b + 1);
    expect(last(ids.c)!.revision).toBe(before.c + 1);
    expect(received.filter((m) => m.nodeId === ids.a)).toEqual([]);
    expect((await node(ids.a)).sync.desired).toBe(before.a);
    expect((await node(ids.b)).sync.desired).toBe(before.b + 1);
  });

  it('an update that changes nothing bumps no revision and sends no push', async () => {
    const before = await Promise.all(Object.values(ids).map(async (id) => (await node(id)).sync.desired));
    received.length = 0;
    expect(await s.job('node.update', { id: ids.a, endpoint: 'a2.example.com:51820' })).toMatchObject({ state: 'completed' });
    await settled();
    expect(received).toEqual([]);
    expect(await Promise.all(Object.values(ids).map(async (id) => (await node(id)).sync.desired))).toEqual(before);
  });

  it('acknowledgements are recorded; stale, future and malformed ones are ignored and logged; the sync endpoint lists exactly the lagging nodes', async () => {
    const [a, b, c] = await Promise.all([node(ids.a), node(ids.b), node(ids.c)]);
    expect(a.sync).toMatchObject({ applied: null, appliedAt: null });
    const lagging = async () => (await s.get<{ items: { nodeId: string; desired: number; applied: number | null }[] }>(`/api/v1/configs/${configId}/sync`)).items;
    expect((await lagging()).map((n) => n.nodeId).sort()).toEqual([ids.a, ids.b, ids.c].sort());

    const ack = (id: string, payload: string) => agent.publishAsync(configAppliedTopic(configId, id), payload, { qos: 1 });
    await ack(ids.a, JSON.stringify({ revision: a.sync.desired }));
    await ack(ids.b, JSON.stringify({ revision: b.sync.desired - 1 }));
    await waitFor('the acknowledgements recorded', async () => (await node(ids.a)).sync.applied === a.sync.desired && (await node(ids.b)).sync.applied === b.sync.desired - 1, 10_000, 50);
    const recorded = await node(ids.a);
    expect(Date.parse(recorded.sync.appliedAt!)).toBeGreaterThan(Date.now() - 60_000);
    // b acknowledged an older revision: it still lags, as c (nothing acknowledged) does.
    expect((await lagging()).map((n) => n.nodeId).sort()).toEqual([ids.b, ids.c].sort());
    expect((await lagging()).find((n) => n.nodeId === ids.b)).toMatchObject({ desired: b.sync.desired, applied: b.sync.desired - 1 });

    logs = '';
    await ack(ids.a, JSON.stringify({ revision: a.sync.desired - 1 })); // stale
    await ack(ids.c, JSON.stringify({ revision: c.sync.desired + 5 })); // never issued
    await ack(ids.c, 'applied'); // malformed
    await ack(ids.c, JSON.stringify({ revision: 'one' }));
    await ack(ids.c, JSON.stringify({ revision: 0 }));
    await waitFor('the ignored acknowledgements logged', async () => logs.includes('config acknowledgements ignored') && (logs.match(/MQTT message dropped/g) ?? []).length >= 3, 10_000, 50);
    expect(logs).toContain('"reason":"stale"');
    expect(logs).toContain('"reason":"future"');
    expect((await node(ids.a)).sync).toEqual(recorded.sync);
    expect((await node(ids.c)).sync.applied).toBeNull();

    const metrics = async () => (await s.call({ method: 'GET', url: '/metrics' })).body;
    expect(await metrics()).toMatch(/^meshq_nodes_config_lagging 2$/m);
    await ack(ids.b, JSON.stringify({ revision: b.sync.desired }));
    await ack(ids.c, JSON.stringify({ revision: c.sync.desired }));
    await waitFor('every node in sync', async () => (await lagging()).length === 0, 10_000, 50);
    expect(await metrics()).toMatch(/^meshq_nodes_config_lagging 0$/m);

    // The events stream says which revisions were acknowledged, once each, and nothing of the ignored ones.
    const stream = await s.app.queues.connection.xrange(eventsStreamKey(s.app.config.queuePrefix), '-', '+');
    const applied = stream
      .map(([, fields]) => fields)
      .filter((f) => f[1] === 'node.applied')
      .map((f) => JSON.parse(f[3]!) as { nodeId: string; revision: number })
      .map(({ nodeId, revision }) => ({ nodeId, revision }));
    expect(applied).toEqual([
      { nodeId: ids.a, revision: a.sync.desired },
      { nodeId: ids.b, revision: b.sync.desired - 1 },
      { nodeId: ids.b, revision: b.sync.desired },
      { nodeId: ids.c, revision: c.sync.desired },
    ]);
  });

  it('a push that cannot be published while the broker is down arrives once it is back, without anyone asking', async () => {
    const before = (await node(ids.b)).sync.desired;
    received.length = 0;
    await broker.stop();
    await waitFor('the link to notice', async () => !s.pool!.mqtt!.connected, 10_000, 20);
    expect(await s.job('node.update', { id: ids.a, endpoint: 'outage.example.com:51820' })).toMatchObject({ state: 'completed' });
    // The pushes are failing and waiting out their backoff: nothing is recorded as sent.
    await waitFor('a failed push attempt', async () => {
      const jobs = await s.app.queues.queue(QUEUES.brokerSync).getJobs(['delayed', 'waiting', 'active'], 0, 100);
      return jobs.some((j) => j?.name === 'node.push-configs' && j.attemptsMade > 0);
    }, 10_000, 50);
    expect((await node(ids.b)).sync.desired).toBe(before);

    const seen = logs.length;
    await waitFor("a failed reconnect of meshq's link", async () => logs.slice(seen).includes('MQTT connection error'), 10_000, 10);
    await broker.start();
    await waitFor('the push after the outage', async () => [ids.b, ids.c].every((p) => peerEndpoint(last(p), ids.a) === 'outage.example.com:51820'), 30_000, 20);
    // Retries number past every failed attempt (one may have delivered before failing).
    expect(last(ids.b)!.revision).toBeGreaterThan(before);
    await settled();
    expect((await node(ids.b)).sync.desired).toBe(last(ids.b)!.revision);
  });

  it('a lagging node that comes online gets its unacknowledged revision again; one in sync gets nothing', async () => {
    const lagging = await node(ids.b);
    expect(lagging.sync.applied).toBeLessThan(lagging.sync.desired);
    const revision = last(ids.b)!.revision;
    const inSync = await node(ids.c);
    await agent.publishAsync(configAppliedTopic(configId, ids.c), JSON.stringify({ revision: inSync.sync.desired }), { qos: 1 });
    await waitFor('c in sync', async () => (await node(ids.c)).sync.applied === inSync.sync.desired, 10_000, 50);
    received.length = 0;
    await agent.publishAsync(statusTopic(configId, ids.b), 'online', { qos: 1, retain: true });
    await agent.publishAsync(statusTopic(configId, ids.c), 'online', { qos: 1, retain: true });
    await waitFor('the resend', async () => last(ids.b)?.revision === revision, 10_000, 20);
    await settled();
    expect(received.map((m) => m.nodeId)).toEqual([ids.b]);
    expect((await node(ids.b)).sync.desired).toBe(lagging.sync.desired);
  });

  it('100 node.update jobs in a burst: every peer ends with the final state, in few pushes', async () => {
    received.length = 0;
    const jobs: Job[] = [];
    for (let i = 0; i < 100; i++) {
      jobs.push(await s.app.queues.submit('node.update', { id: ids.a, endpoint: `burst-${i}.example.com:51820` }, { actor: 'test' }));
    }
    await waitFor('the burst to commit', async () => (await Promise.all(jobs.map((j) => j.getState()))).every((st) => st === 'completed'), 60_000, 100);
    await settled();
    // Jobs run concurrently, so the last to commit decides: the final state is the database's.
    const final = (await node(ids.a)).endpoint;
    expect(final).toMatch(/^burst-\d+\.example\.com:51820$/);
    for (const peer of [ids.b, ids.c]) expect(peerEndpoint(last(peer), ids.a)).toBe(final);
    const counts = { b: received.filter((m) => m.nodeId === ids.b).length, c: received.filter((m) => m.nodeId === ids.c).length };
    console.log(`[data-plane ${dialect}] pushes received for 100 node.update jobs: b=${counts.b} c=${counts.c} (a: ${received.filter((m) => m.nodeId === ids.a).length})`);
    for (const n of Object.values(counts)) {
      expect(n).toBeGreaterThanOrEqual(1);
      expect(n).toBeLessThanOrEqual(100);
    }
    // Each push carries a higher revision than the one before it.
    for (const peer of [ids.b, ids.c]) {
      const revisions = received.filter((m) => m.nodeId === peer).map((m) => m.revision);
      expect(revisions).toEqual([...revisions].sort((x, y) => x - y));
      expect(new Set(revisions).size).toBe(revisions.length);
    }
  });

  it('deleting a node: the other two receive pushes without it within 5 seconds', async () => {
    received.length = 0;
    const t0 = Date.now();
    expect(await s.job('node.delete', { id: ids.c })).toMatchObject({ state: 'completed' });
    await waitFor('pushes without the deleted node', async () => [ids.a, ids.b].every((id) => last(id) && !last(id)!.body.peers.some((p) => p.nodeId === ids.c)), 5_000, 20);
    const elapsed = Math.max(...[ids.a, ids.b].map((id) => last(id)!.at - t0));
    console.log(`[data-plane ${dialect}] node.delete to both peers' pushes: ${elapsed} ms`);
    expect(last(ids.a)!.body.peers.map((p) => p.nodeId)).toEqual([ids.b]);
    expect(last(ids.b)!.body.peers.map((p) => p.nodeId)).toEqual([ids.a]);
    await settled();
    expect(received.some((m) => m.nodeId === ids.c)).toBe(false);
  });

  it('a batch of four pages whose broker dies once two are acknowledged: nothing unpublished is recorded, the rest stays requested, and every node ends with its own configuration', async () => {
    // Four pages of BATCH_NODES (128, src/jobs/processors/push-config.ts), the last one
    // short; few links, so the peer-row budget never cuts a page first. On PostgreSQL one
    // batch serves all four in its one transaction; on SQLite each page is a batch of its own.
    const PAGE = 128;
    const NODES = 3 * PAGE + 64;
    const password = 'pages-file-password';
    const tables = generateBusinessTables({ configs: 1, nodesPerConfig: NODES, neighbours: 1, forwardsPerNode: 0, audit: 0, settings: 0, staticEvery: 0, label: 'pages', serverKey: s.app.serverKey });
    // Restored rather than created job by job: one job, and its broker sync asks for a push
    // to every node. Last in this file: the restore replaces the mesh the tests above use.
    const res = await uploadSnapshot(s.api, s.auth, await encodeTestSnapshot(tables, password), password, '?wait=60000');
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json<{ state: string }>().state).toBe('completed');
    const pagesId = tables.mesh_config![0]!.id as string;
    // config.update asks for every node's push in one statement, at one time: a batch takes
    // them in node id order.
    const nodeIds = tables.node!.map((n) => n.id as string).sort();
    await waitFor('the pushes after the restore', async () => nodeIds.every((id) => last(id)), 60_000, 100);
    await settled();

    const repos = () => createRepositories(s.app.uow.fork(), { serverKey: s.app.serverKey });
    const desired = async () => new Map(await Promise.all(nodeIds.map(async (id) => [id, (await repos().nodeSync.view(id)).desired] as const)));
    const pending = async () => (await repos().nodeSync.pendingPushesWithPeers(10 * PAGE, Number.MAX_SAFE_INTEGER)).requests.map((r) => r.nodeId).sort();
    const before = await desired();
    received.length = 0;
    const newDns = (m: Received) => m.body.interface.dns[0] === '9.9.9.9';

    // The broker dies the moment the second page's publish is acknowledged (its log line
    // is written before the batch goes on), so the third page is the first it never takes.
    let acknowledged = 0;
    let died: Promise<void> | undefined;
    onLogLine = (line) => {
      if (!line.includes('"msg":"configurations published"') || ++acknowledged !== 2) return;
      died = broker.kill('SIGKILL');
      onLogLine = undefined;
    };
    expect(await s.job('config.update', { id: pagesId, dns: ['9.9.9.9'] })).toMatchObject({ state: 'completed' });
    await waitFor('the second page to be acknowledged', async () => died !== undefined, 20_000, 20);
    await died;
    const failed = await waitFor('a failed batch attempt', async () => {
      const jobs = await s.app.queues.queue(QUEUES.brokerSync).getJobs(['delayed', 'waiting', 'active'], 0, 100);
      return jobs.find((j) => j?.name === 'node.push-configs' && j.attemptsMade > 0);
    }, 30_000, 50);
    // Whichever noticed first: the third page's publish, or the fourth page (read while the
    // third was on its way) finding the link down.
    expect(failed.failedReason).toMatch(/MQTT broker is not connected|Connection closed|no acknowledgement from the MQTT broker/);

    const [acked, unacked] = [nodeIds.slice(0, 2 * PAGE), nodeIds.slice(2 * PAGE)];
    // The two acknowledged pages reached the agents, once each; nothing else did.
    expect([...new Set(received.filter(newDns).map((m) => m.nodeId))].sort()).toEqual(acked);
    expect(received.filter(newDns)).toHaveLength(acked.length);
    const during = await desired();
    if (dialect === 'postgresql') {
      // One transaction for the four pages: the failure rolled back the two acknowledged
      // pages' revisions and settled requests with the rest. Every request stays.
      expect(await pending()).toEqual(nodeIds);
      for (const id of nodeIds) expect(during.get(id), id).toBe(before.get(id));
    } else {
      // Two batches committed, each after its page was acknowledged; the third failed, and
      // the fourth was never taken.
      expect(await pending()).toEqual(unacked);
      for (const id of acked) expect(during.get(id), id).toBe(before.get(id)! + 1);
      for (const id of unacked) expect(during.get(id), id).toBe(before.get(id));
    }

    // Back right after a failed reconnect, so that the agents' client (every 50 ms) has
    // subscribed again before meshq's link connects (at least 2 s later) and publishes.
    const seen = logs.length;
    await waitFor("a failed reconnect of meshq's link", async () => logs.slice(seen).includes('MQTT connection error'), 10_000, 10);
    await broker.start();
    await waitFor('every node to get its new configuration', async () => nodeIds.every((id) => last(id) && newDns(last(id)!)), 60_000, 100);
    await settled();
    expect(await pending()).toEqual([]);

    const after = await desired();
    const r = repos();
    for (const id of nodeIds) {
      const mine = received.filter((m) => m.nodeId === id);
      const newest = mine.reduce((a, b) => (b.revision > a.revision ? b : a));
      // The newest revision a node got is the one recorded, and it is its own configuration.
      expect(newest.revision, id).toBe(after.get(id));
      expect(newest.body.interface.address).toBe(tables.node!.find((n) => n.id === id)!.address);
      expect(newest.body.interface.dns).toEqual(['9.9.9.9']);
      expect(newest.body.peers).toEqual(await readPeers(r, id));
      // A revision number never comes with two contents: a retry numbers past the failed
      // attempt, whose third page may still arrive late from the link's outgoing store.
      for (const m of mine) {
        const same = mine.filter((o) => o.revision === m.revision).map((o) => ({ ...o.body, generatedAt: '' }));
        expect(new Set(same.map((b) => JSON.stringify(b))).size, `${id} revision ${m.revision}`).toBe(1);
      }
    }
    const count = (id: string) => received.filter((m) => m.nodeId === id && newDns(m)).length;
    if (dialect === 'postgresql') {
      // At least once: the acknowledged pages' revisions were rolled back with the batch, and
      // the retry published them again under a higher revision.
      for (const id of acked) expect(count(id), id).toBe(2);
      for (const id of acked) expect(after.get(id)).toBeGreaterThan(before.get(id)! + 1);
    } else {
      // What was committed is not sent again.
      for (const id of acked) expect(count(id), id).toBe(1);
      for (const id of acked) expect(after.get(id)).toBe(before.get(id)! + 1);
    }
    // The page that was never handed to the broker was sent once, by the retry.
    for (const id of nodeIds.slice(3 * PAGE)) expect(count(id), id).toBe(1);
  });
});
