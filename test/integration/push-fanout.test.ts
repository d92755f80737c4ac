/**
 * Config push fan-out is set-based and batched: a change writes push requests into the
 * push_request outbox in its own transaction, and `node.push-configs` batches read the
 * interfaces and peers of many nodes at once. Shown here, on both dialects and the real
 * Mosquitto: after mesh.generate and a few link deletions (so that no two nodes have the
 * same peers) every dynamic node's last push carries exactly its own interface and its own
 * peers, in link order, its own private key or none (agent-held), and far fewer batch jobs
 * ran than nodes were pushed; a request made while a batch holds older ones survives the
 * batch (it is settled only at the seq the batch read). A mesh of more nodes than a page
 * holds is served in pages, on PostgreSQL several in one batch's transaction (each page
 * read while the one before is acknowledged), and every node still gets exactly its own.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type MqttClient } from 'mqtt';
import { configPushTopic } from '../../src/broker/topics.js';
import { generateKeyPair } from '../../src/domain/keys.js';
import { QUEUES } from '../../src/jobs/names.js';
import { readPeers, type PushMessage } from '../../src/jobs/processors/push-config.js';
import { createRepositories } from '../../src/repositories/index.js';
import { DIALECTS } from '../support/db.js';
import { startEmqxDouble, type EmqxDouble } from '../support/emqx-double.js';
import { SHARED_MQTT_URL } from '../support/mosquitto.js';
import { waitFor } from '../support/processes.js';
import { mqttEnv, startStack, type Stack } from '../support/stack.js';

const DYNAMIC = 24;

describe.each(DIALECTS)('config push fan-out on %s', (dialect) => {
  let emqx: EmqxDouble;
  let s: Stack;
  let subscriber: MqttClient;
  let configId: string;
  const last = new Map<string, PushMessage>();
  const dynamicIds: string[] = [];
  let staticId: string;

  const repos = () => createRepositories(s.app.uow.fork(), { serverKey: s.app.serverKey });
  const brokerJobs = async () => (await s.app.queues.queue(QUEUES.brokerSync).getJobs(['completed', 'failed', 'active', 'waiting', 'delayed', 'prioritized'], 0, 5000)).filter(Boolean);

  /** No push waiting or running and no request left, then a moment for the last message. */
  async function settled(): Promise<void> {
    await waitFor(
      'the pushes to settle',
      async () => {
        const busy = (await brokerJobs()).filter((j) => j.name.startsWith('node.push-config') && !j.finishedOn);
        return busy.length === 0 && (await repos().nodeSync.pendingPushesWithPeers(1, Number.MAX_SAFE_INTEGER)).pending === 0;
      },
      60_000,
      50,
    );
    await new Promise((r) => setTimeout(r, 300));
  }

  beforeAll(async () => {
    emqx = await startEmqxDouble();
    s = await startStack(dialect, 'push_fanout', { adminPassword: 'push-fanout-admin-password', env: mqttEnv(emqx) });
    await s.pool!.mqtt!.ready();
    configId = (await s.job('config.create', { name: 'fanout', subnet: '10.79.0.0/24' })).result!.id as string;
    subscriber = connect(SHARED_MQTT_URL, { reconnectPeriod: 0 });
    subscriber.on('message', (_topic, payload) => {
      const body = JSON.parse(payload.toString('utf8')) as PushMessage;
      last.set(body.nodeId, body);
    });
    await new Promise<void>((resolve) => subscriber.once('connect', () => resolve()));
    await subscriber.subscribeAsync(`meshq/${configId}/+/config/push`, { qos: 1 });
    for (let i = 0; i < DYNAMIC; i++) {
      // Every third node's agent holds its own key.
      const agentKey = i % 3 === 0 ? { publicKey: generateKeyPair().publicKey } : {};
      const job = await s.job('node.create', { configId, name: `d${i}`, kind: 'dynamic', endpoint: `d${i}.example.com:51820`, ...agentKey });
      expect(job.state, JSON.stringify(job.error)).toBe('completed');
      dynamicIds.push(job.result!.id as string);
    }
    staticId = (await s.job('node.create', { configId, name: 'static', kind: 'static', endpoint: '203.0.113.7:51820' })).result!.id as string;
    await settled();
  });

  afterAll(async () => {
    await subscriber?.endAsync();
    await s?.stop();
    await emqx?.close();
  });

  it('a request made while a batch holds an older one survives that batch', async () => {
    const sync = repos().nodeSync;
    // The oldest requests as a batch takes them (without their link counts).
    const pendingPushes = async (limit: number) =>
      (await sync.pendingPushesWithPeers(limit, Number.MAX_SAFE_INTEGER)).requests.map(({ peers: _peers, ...request }) => request);
    const [kept, served] = [randomUUID(), randomUUID()];
    expect(await sync.requestPushesForNew([kept, served])).toBe(2);
    const taken = (await pendingPushes(1000)).filter((t) => t.nodeId === kept || t.nodeId === served);
    expect(taken.map((t) => t.seq)).toEqual([1, 1]);
    // Another change asks again for one of them before the batch settles.
    expect(await sync.requestPushesForNew([kept])).toBe(1);
    await sync.settlePushes(taken);
    const left = (await pendingPushes(1000)).filter((t) => t.nodeId === kept || t.nodeId === served);
    expect(left).toEqual([{ nodeId: kept, seq: 2, resend: false }]);
    await sync.settlePushes(left);
    expect(await pendingPushes(1000)).toEqual([]);
  });

  it('a mesh of more nodes than one page holds: every node gets exactly its own peers, and on PostgreSQL one batch served several pages', async () => {
    const NODES = 150; // more than a page's 128 requests (BATCH_NODES in src/jobs/processors/push-config.ts)
    const { id: bigId } = (await s.job('config.create', { name: 'fanout-pages', subnet: '10.78.0.0/16' })).result as { id: string };
    await subscriber.subscribeAsync(`meshq/${bigId}/+/config/push`, { qos: 1 });
    const ids: string[] = [];
    for (let i = 0; i < NODES; i++) ids.push((await s.job('node.create', { configId: bigId, name: `p${i}`, kind: 'dynamic' })).result!.id as string);
    await settled();
    const before = new Set((await brokerJobs()).filter((j) => j.name === 'node.push-configs').map((j) => j.id));
    expect(await s.job('mesh.generate', { configId: bigId })).toMatchObject({ state: 'completed' });
    await settled();
    const batches = (await brokerJobs()).filter((j) => j.name === 'node.push-configs' && !before.has(j.id) && j.finishedOn);
    const served = batches.map((j) => (j.returnvalue as { requests: number }).requests);
    expect(served.reduce((a, b) => a + b, 0)).toBe(NODES);
    if (dialect === 'postgresql') expect(Math.max(...served)).toBe(NODES);
    else expect(Math.max(...served)).toBeLessThanOrEqual(128);

    const r = repos();
    for (const id of ids) {
      const msg = last.get(id);
      expect(msg?.revision, id).toBe((await r.nodeSync.view(id)).desired);
      expect(msg!.interface.address).toBe((await r.nodes.get(id))!.address);
      expect(msg!.peers).toHaveLength(NODES - 1);
      expect(msg!.peers).toEqual(await readPeers(r, id));
    }
  });

  it("after mesh.generate and link deletions every node gets exactly its own interface and peers; mesh.generate's pushes come in far fewer batch jobs than nodes", async () => {
    const batchesBefore = (await brokerJobs()).filter((j) => j.name === 'node.push-configs').length;
    expect(await s.job('mesh.generate', { configId })).toMatchObject({ state: 'completed' });
    await settled();
    const batches = (await brokerJobs()).filter((j) => j.name === 'node.push-configs').length - batchesBefore;
    expect(batches).toBeLessThan(DYNAMIC / 4);
    // Every other node is a peer, the static one included.
    for (const id of dynamicIds) expect(last.get(id)?.peers).toHaveLength(DYNAMIC);

    // Remove a different number of pairs per node: node i loses its links to the i % 4 next nodes.
    const links = repos().links;
    for (let i = 0; i < DYNAMIC; i++) {
      for (let k = 1; k <= i % 4; k++) {
        const link = await links.between(dynamicIds[i]!, dynamicIds[(i + k) % DYNAMIC]!);
        if (link) expect(await s.job('link.delete', { id: link.id })).toMatchObject({ state: 'completed' });
      }
    }
    await settled();

    const r = repos();
    const byId = new Map((await r.nodes.list(configId, {}, { limit: 100 })).items.map((n) => [n.id, n]));
    const peerCounts = new Set<number>();
    for (const id of dynamicIds) {
      const node = byId.get(id)!;
      const msg = last.get(id);
      expect(msg, node.name).toBeDefined();
      const ownKey = await r.nodes.privateKey(id);
      expect(msg!.interface).toEqual({
        name: node.name,
        address: node.address,
        subnet: '10.79.0.0/24',
        listenPort: 51820,
        publicKey: node.publicKey,
        ...(ownKey === null ? {} : { privateKey: ownKey }),
        dns: [],
        protocol: 'wireguard',
        awg: null,
      });
      const expected = (await r.links.list(configId, { nodeId: id }, { limit: 100 })).items.map((l) => {
        const peer = byId.get(l.toNodeId)!;
        return { nodeId: peer.id, name: peer.name, publicKey: peer.publicKey, endpoint: peer.endpoint, listenPort: 51820, allowedIps: l.allowedIps, persistentKeepalive: l.persistentKeepalive };
      });
      expect(msg!.peers, node.name).toEqual(expected);
      peerCounts.add(expected.length);
      expect(msg!.revision).toBe((await r.nodeSync.view(id)).desired);
      // Never another node's private key.
      for (const other of dynamicIds.filter((o) => o !== id)) {
        const key = await r.nodes.privateKey(other);
        if (key) expect(JSON.stringify(msg)).not.toContain(key);
      }
    }
    // The deletions left nodes with different numbers of peers: the grouping was exercised.
    expect(peerCounts.size).toBeGreaterThan(1);
    expect(last.has(staticId)).toBe(false);
    expect(configPushTopic(configId, dynamicIds[0]!)).toContain(configId);
  });
});
