/**
 * Config pushes over the real Mosquitto: after mesh.generate every dynamic node's agent
 * receives its configuration with the right peers (and its own private key, nobody
 * else's); a push whose content did not change publishes nothing; after a snapshot
 * restore the broker sync pushes to every dynamic node whose content the restore changed.
 * With MQTT disabled node.push-config fails with MQTT_DISABLED and nothing is enqueued.
 * Against an EMQX whose authorization does not deny by default, pushes (they carry a
 * private key) fail with BROKER_INSECURE and the broker status says why.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type MqttClient } from 'mqtt';
import { configPushTopic } from '../../src/broker/topics.js';
import { createRepositories } from '../../src/repositories/index.js';
import type { NodeView } from '../../src/repositories/nodes.js';
import type { PushedConfig } from '../../src/jobs/processors/push-config.js';
import { QUEUES } from '../../src/jobs/names.js';
import { DIALECTS } from '../support/db.js';
import { SECURE_AUTHORIZATION, startEmqxDouble, STOCK_EMQX_AUTHORIZATION, type EmqxDouble } from '../support/emqx-double.js';
import { createHarness, type Harness } from '../support/harness.js';
import { SHARED_MQTT_URL } from '../support/mosquitto.js';
import { waitFor } from '../support/processes.js';
import { uploadSnapshot } from '../support/snapshot-data.js';
import { mqttEnv, startStack, type JobView, type Stack } from '../support/stack.js';

const ADMIN_PASSWORD = 'push-admin-password';

interface Received {
  topic: string;
  text: string;
  body: PushedConfig;
  retain: boolean;
  qos: number;
}

describe.each(DIALECTS)('MQTT config push on %s', (dialect) => {
  let emqx: EmqxDouble;
  let s: Stack;
  let subscriber: MqttClient;
  const received: Received[] = [];
  let configId: string;
  let nodes: NodeView[];
  let dynamic: NodeView[];
  let staticNode: NodeView;

  beforeAll(async () => {
    emqx = await startEmqxDouble();
    s = await startStack(dialect, 'mqtt_push', {
      adminPassword: ADMIN_PASSWORD,
      env: mqttEnv(emqx),
    });
    await s.pool!.mqtt!.ready();
    // The insecure cases of the first test need a verdict that no push has made good yet:
    // the pushes node.create requests fail with it, publishing nothing.
    emqx.setAuthorization(STOCK_EMQX_AUTHORIZATION);

    configId = (await s.job('config.create', { name: 'push', subnet: '10.78.0.0/24', dns: ['10.78.0.1'] })).result!.id as string;
    const specs = [
      { name: 'alpha', kind: 'dynamic', endpoint: 'alpha.example.com:51820' },
      { name: 'bravo', kind: 'dynamic', listenPort: 51999 },
      { name: 'charlie', kind: 'dynamic', endpoint: '[2001:db8::7]:51000', listenPort: 51000 },
      { name: 'static', kind: 'static', endpoint: '203.0.113.9:51820' },
    ];
    for (const spec of specs) {
      const job = await s.job('node.create', { configId, ...spec });
      expect(job.state, JSON.stringify(job.error)).toBe('completed');
    }
    nodes = (await repos().nodes.list(configId, {}, { limit: 100 })).items;
    dynamic = nodes.filter((n) => n.kind === 'dynamic');
    staticNode = nodes.find((n) => n.kind === 'static')!;

    subscriber = connect(SHARED_MQTT_URL, { reconnectPeriod: 0 });
    subscriber.on('message', (topic, payload, packet) => {
      const text = payload.toString('utf8');
      received.push({ topic, text, body: JSON.parse(text) as PushedConfig, retain: packet.retain, qos: packet.qos });
    });
    await new Promise<void>((resolve) => subscriber.once('connect', () => resolve()));
    await subscriber.subscribeAsync(`meshq/${configId}/+/config/push`, { qos: 1 });
  });

  afterAll(async () => {
    await subscriber?.endAsync();
    await s?.stop();
    await emqx?.close();
  });

  function repos() {
    return createRepositories(s.app.uow.fork(), { serverKey: s.app.serverKey });
  }

  const pushJobs = async () =>
    (await s.app.queues.queue(QUEUES.brokerSync).getJobs(['completed', 'failed', 'active', 'waiting', 'delayed'], 0, 1000)).filter(
      (j) => j?.name === 'node.push-config',
    );

  const batchJobs = async () =>
    (await s.app.queues.queue(QUEUES.brokerSync).getJobs(['completed', 'failed', 'active', 'waiting', 'delayed'], 0, 1000)).filter(
      (j) => j?.name === 'node.push-configs',
    );

  async function expectPushedConfig(msg: Received, node: NodeView): Promise<void> {
    expect(msg.topic).toBe(configPushTopic(configId, node.id));
    // Never retained: the message holds the node's private key.
    expect(msg.retain).toBe(false);
    expect(msg.qos).toBe(1);
    const ownKey = await repos().nodes.privateKey(node.id);
    expect(msg.body).toMatchObject({
      version: 1,
      configId,
      nodeId: node.id,
      interface: {
        name: node.name,
        address: node.address,
        subnet: '10.78.0.0/24',
        listenPort: node.listenPort ?? 51820,
        publicKey: node.publicKey,
        privateKey: ownKey,
        dns: ['10.78.0.1'],
        protocol: 'wireguard',
        awg: null,
      },
    });
    for (const other of nodes.filter((n) => n.id !== node.id)) {
      expect(msg.text).not.toContain(await repos().nodes.privateKey(other.id));
    }
    const peers = [...msg.body.peers].sort((a, b) => a.nodeId.localeCompare(b.nodeId));
    const expected = nodes
      .filter((n) => n.id !== node.id)
      .sort((a, b) => a.id.localeCompare(b.id))
      .map((p) => ({
        nodeId: p.id,
        name: p.name,
        publicKey: p.publicKey,
        endpoint: p.endpoint,
        listenPort: p.listenPort ?? 51820,
        allowedIps: [`${p.address}/32`],
        persistentKeepalive: 25,
      }));
    expect(peers).toEqual(expected);
  }

  // First: a good verdict is remembered for a while, so the insecure cases come before any
  // push has succeeded against this double.
  it('refuses to push a private key through an EMQX that does not deny by default, says why, and pushes once it does', async () => {
    const node = dynamic[0]!;
    const status = async () => {
      const res = await s.call({ method: 'GET', url: '/api/v1/broker/status' });
      expect(res.statusCode, res.body).toBe(200);
      return res.json<{ authorization: { ok: boolean; reason: string | null } | null }>().authorization;
    };

    emqx.setAuthorization(STOCK_EMQX_AUTHORIZATION);
    const stock = await s.job('node.push-config', { nodeId: node.id });
    expect(stock).toMatchObject({ state: 'failed', attempts: 1, error: { code: 'BROKER_INSECURE' } });
    expect(stock.error!.message).toContain('no_match');
    expect(await status()).toEqual({ ok: false, reason: expect.stringContaining('no_match = "allow"') });

    // Denying by default is not enough when a file source is asked first.
    emqx.setAuthorization({ noMatch: 'deny', sources: STOCK_EMQX_AUTHORIZATION.sources });
    const fileFirst = await s.job('node.push-config', { nodeId: node.id });
    expect(fileFirst).toMatchObject({ state: 'failed', error: { code: 'BROKER_INSECURE' } });
    expect(fileFirst.error!.message).toContain('"file" is consulted before');
    expect(await status()).toEqual({ ok: false, reason: expect.stringContaining('"file"') });
    await new Promise((r) => setTimeout(r, 300));
    expect(received).toEqual([]);

    emqx.setAuthorization(SECURE_AUTHORIZATION);
    expect(await status()).toEqual({ ok: true, reason: null });
    const pushed = await s.job('node.push-config', { nodeId: node.id });
    expect(pushed).toMatchObject({ state: 'completed', result: { nodeId: node.id, revision: 1, pushed: true } });
    await waitFor('the push', async () => received.length === 1, 10_000, 50);
    // No links yet: the node's own interface and no peers.
    expect(received[0]!.topic).toBe(configPushTopic(configId, node.id));
    expect(received[0]!.body.interface.privateKey).toBe(await repos().nodes.privateKey(node.id));
    expect(received[0]!.body.peers).toEqual([]);
    expect((received[0]!.body as PushedConfig & { revision: number }).revision).toBe(1);

    // The tests below count pushes from here.
    received.length = 0;
    for (const job of [...(await pushJobs()), ...(await batchJobs())]) await job.remove();
  });

  it('after mesh.generate each dynamic node receives its configuration with its peers; static nodes get none', async () => {
    const generated = await s.job('mesh.generate', { configId });
    expect(generated).toMatchObject({ state: 'completed', result: { created: 6 } });

    await waitFor('a push per dynamic node', async () => new Set(received.map((m) => m.body.nodeId)).size === dynamic.length, 20_000, 50);
    await waitFor('the push batches to complete', async () => {
      const jobs = await batchJobs();
      return jobs.length > 0 && (await Promise.all(jobs.map((j) => j.getState()))).every((st) => st === 'completed');
    }, 20_000, 100);
    // One batch served every dynamic node: the first had revision 1 already (above), the
    // others got their first. The static node was never asked for.
    const results = (await batchJobs()).map((j) => j.returnvalue as { requests: number; pushed: number; unchanged: number; skipped: number; refused: number });
    expect(results.reduce((n, r) => n + r.pushed, 0)).toBe(dynamic.length);
    expect(results.reduce((n, r) => n + r.skipped + r.refused, 0)).toBe(0);
    for (const job of await batchJobs()) expect((job.data as { actor: string }).actor).toBe('admin');
    for (const node of dynamic) expect((await repos().nodeSync.view(node.id)).desired).toBe(node.id === dynamic[0]!.id ? 2 : 1);
    await new Promise((r) => setTimeout(r, 300));
    expect(received).toHaveLength(dynamic.length);
    for (const node of dynamic) await expectPushedConfig(received.find((m) => m.body.nodeId === node.id)!, node);
    expect(received.some((m) => m.body.nodeId === staticNode.id)).toBe(false);

    // Job results and data never carry a key.
    for (const job of [...(await pushJobs()), ...(await batchJobs())]) expect(JSON.stringify([job.data, job.returnvalue])).not.toMatch(/privateKey|[A-Za-z0-9+/]{43}=/);
  });

  it('a run of mesh.generate that creates nothing pushes nothing', async () => {
    const before = (await batchJobs()).length;
    received.length = 0;
    expect(await s.job('mesh.generate', { configId })).toMatchObject({ state: 'completed', result: { created: 0 } });
    await new Promise((r) => setTimeout(r, 300));
    expect((await batchJobs()).length).toBe(before);
    expect(received).toEqual([]);
  });

  it('a push asked for directly publishes nothing when the content is unchanged, and is refused for a static node', async () => {
    received.length = 0;
    const node = dynamic[0]!;
    const job = await s.job('node.push-config', { nodeId: node.id });
    expect(job).toMatchObject({ state: 'completed', result: { nodeId: node.id, peers: 3, revision: 2, pushed: false, reason: 'unchanged' } });
    await new Promise((r) => setTimeout(r, 300));
    expect(received).toEqual([]);

    const refused = await s.job('node.push-config', { nodeId: staticNode.id });
    expect(refused).toMatchObject({ state: 'failed', error: { code: 'INVALID' } });
    expect(refused.error!.message).toContain('static');
  });

  it('after a snapshot restore the broker sync pushes to every dynamic node whose content the restore changed', async () => {
    const exported = await s.call({ method: 'POST', url: '/api/v1/snapshots/export?wait=30000' });
    expect(exported.statusCode, exported.body).toBe(200);
    const { snapshotId } = exported.json<JobView>().result as { snapshotId: string };
    const file = (await s.call({ method: 'GET', url: `/api/v1/snapshots/${snapshotId}/download` })).rawPayload;

    // A change after the export: its peers hear of it, and the restore takes it back.
    const moved = dynamic[0]!;
    expect(await s.job('node.update', { id: moved.id, endpoint: 'moved.example.com:51820' })).toMatchObject({ state: 'completed' });
    const peersOfMoved = dynamic.filter((n) => n.id !== moved.id);
    await waitFor('the moved endpoint at its peers', async () => received.filter((m) => m.text.includes('moved.example.com')).length === peersOfMoved.length, 20_000, 50);

    received.length = 0;
    const res = await uploadSnapshot(s.api, s.auth, file, ADMIN_PASSWORD, '?wait=30000');
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json<JobView>()).toMatchObject({ type: 'snapshot.restore', state: 'completed' });

    // The moved node's own configuration does not carry its endpoint: only its peers change.
    await waitFor('a push per peer of the moved node after the restore', async () => new Set(received.map((m) => m.body.nodeId)).size === peersOfMoved.length, 30_000, 50);
    await new Promise((r) => setTimeout(r, 500));
    expect(received).toHaveLength(peersOfMoved.length);
    for (const node of peersOfMoved) await expectPushedConfig(received.find((m) => m.body.nodeId === node.id)!, node);

    // The sync that applied the restore's epoch is the one that asked.
    const syncs = (await s.app.queues.queue(QUEUES.brokerSync).getJobs(['completed'], 0, 1000)).filter((j) => j?.name === 'broker.sync');
    expect(syncs.some((j) => (j.returnvalue as { epoch: number }).epoch === 1)).toBe(true);
  });
});

describe.each(DIALECTS)('node.push-config with MQTT disabled on %s', (dialect) => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness(dialect, 'push_disabled');
  });
  afterAll(async () => {
    await h?.close();
  });

  it('fails permanently with MQTT_DISABLED, and mesh.generate enqueues no push', async () => {
    const { id: configId } = await h.run<{ id: string }>('config.create', { name: 'off', subnet: '10.79.0.0/24' });
    const a = await h.run<{ id: string }>('node.create', { configId, name: 'a', kind: 'dynamic' });
    await h.run('node.create', { configId, name: 'b', kind: 'dynamic' });

    expect(await h.fail('node.push-config', { nodeId: a.id })).toEqual({
      code: 'MQTT_DISABLED',
      message: expect.stringContaining('MQTT is disabled'),
    });

    h.enqueued.length = 0;
    expect(await h.run('mesh.generate', { configId })).toEqual({ created: 1 });
    expect(h.enqueued).toEqual([]);
  });

  it('rejects a payload that is not {nodeId}', async () => {
    expect(await h.fail('node.push-config', { nodeId: 'nope' })).toMatchObject({ code: 'INVALID' });
    expect(await h.fail('node.push-config', { nodeId: '0194a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b', extra: 1 })).toMatchObject({ code: 'INVALID' });
  });
});
