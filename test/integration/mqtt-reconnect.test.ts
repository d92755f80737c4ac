/**
 * Broker outages with a real worker process and a Mosquitto of this test's own: the
 * worker starts, connects and asks for a broker sync; the broker is stopped and started
 * again; the worker reconnects with backoff, asks for a sync again (credentials changed
 * while EMQX was away reach it at once) and subscribes again (presence works), the config
 * push that a change during the outage requested is retried until the broker is back, and
 * nothing crashes. The worker then shuts down cleanly.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type MqttClient } from 'mqtt';
import type { Job } from 'bullmq';
import { bootstrap, type AppContext } from '../../src/bin/bootstrap.js';
import { MQTT_CONNECTED_SYNC_REASON } from '../../src/broker/mqtt-link.js';
import { configPushTopic, statusTopic } from '../../src/broker/topics.js';
import type { PushMessage } from '../../src/jobs/processors/push-config.js';
import { createRepositories } from '../../src/repositories/index.js';
import { QUEUES } from '../../src/jobs/names.js';
import { DIALECTS, createTestDatabase, type TestDatabase } from '../support/db.js';
import { startEmqxDouble, type EmqxDouble } from '../support/emqx-double.js';
import { startTestBroker, type TestBroker } from '../support/mosquitto.js';
import { killAll, startWorkerProcess, waitFor, type Child } from '../support/processes.js';
import { deletePrefix } from '../support/redis.js';
import type { JobInput, JobType } from '../../src/jobs/table.js';

describe.each(DIALECTS)('MQTT reconnect with a worker process on %s', (dialect) => {
  let broker: TestBroker;
  let emqx: EmqxDouble;
  let db: TestDatabase;
  let app: AppContext;
  let worker: Child;
  const clients: MqttClient[] = [];

  beforeAll(async () => {
    broker = await startTestBroker();
    emqx = await startEmqxDouble();
    db = await createTestDatabase(dialect, 'mqtt_reconnect');
    const mqttEnv = {
      MQTT_ENABLED: 'true',
      MQTT_URL: broker.url,
      EMQX_API_URL: emqx.url,
      EMQX_API_KEY: emqx.apiKey,
      EMQX_API_SECRET: emqx.apiSecret,
    };
    app = await bootstrap('test', db.config(mqttEnv));
    worker = await startWorkerProcess({ ...db.env, ...mqttEnv, LOG_LEVEL: 'info', TEST_QUEUE_PREFIX: app.config.queuePrefix });
  });

  afterAll(async () => {
    for (const c of clients) c.end(true);
    await killAll();
    if (app) {
      await deletePrefix(app.config.queuePrefix);
      await app.close();
    }
    await db?.drop();
    await emqx?.close();
    await broker?.close();
  });

  const brokerJobs = async (): Promise<Job[]> =>
    (await app.queues.queue(QUEUES.brokerSync).getJobs(['completed', 'failed', 'active', 'waiting', 'delayed', 'prioritized'], 0, 1000)).filter(Boolean);

  const connectSyncs = async () =>
    (await brokerJobs()).filter((j) => j.name === 'broker.sync' && (j.data as { payload: { reason?: string } }).payload.reason === MQTT_CONNECTED_SYNC_REASON);

  const completedConnectSyncs = async () => {
    const jobs = await connectSyncs();
    const states = await Promise.all(jobs.map((j) => j.getState()));
    return jobs.filter((_, i) => states[i] === 'completed');
  };

  const submitAndWait = async <T extends JobType>(type: T, data: JobInput<T>) => {
    const job = await app.queues.submit(type, data, { actor: 'test' });
    const view = await app.queues.waitFor(job, 20_000);
    expect(view.state, JSON.stringify(view.error)).toBe('completed');
    return view.result as { id: string };
  };

  const mqttClient = async (opts: Parameters<typeof connect>[1] = {}) => {
    const client = connect(broker.url, { reconnectPeriod: 0, ...opts });
    clients.push(client);
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    return client;
  };

  it('reconnects after the broker restarts, requests a sync each time, keeps working and never crashes', async () => {
    await waitFor('the first connection to request a sync', async () => (await completedConnectSyncs()).length >= 1, 30_000, 100);
    expect(emqx.requests.length).toBeGreaterThan(0);
    const syncsBefore = (await connectSyncs()).length;
    const emqxRequestsBefore = emqx.requests.length;

    const { id: configId } = await submitAndWait('config.create', { name: 'reconnect', subnet: '10.80.0.0/24' });
    const { id: nodeId } = await submitAndWait('node.create', { configId, name: 'agent', kind: 'dynamic' });
    const { id: peerId } = await submitAndWait('node.create', { configId, name: 'peer', kind: 'static' });
    await submitAndWait('mesh.generate', { configId });

    await broker.stop();
    await waitFor('the worker to notice', async () => worker.output().includes('MQTT connection lost'), 10_000, 50);

    // A change during the outage: the agent's push it requests fails (not connected) and is
    // retried with backoff.
    await submitAndWait('node.update', { id: peerId, endpoint: 'peer.example.com:51820' });
    const push = await waitFor('the requested push', async () =>
      (await brokerJobs()).find((j) => j.name === 'node.push-configs' && !j.finishedOn),
    10_000, 50);
    await waitFor('a failed push attempt', async () => ((await app.queues.queue(QUEUES.brokerSync).getJob(push.id!))?.attemptsMade ?? 0) >= 1, 10_000, 50);
    await new Promise((r) => setTimeout(r, 1_500));

    await broker.start();
    const agentSubscriber = await mqttClient({ clientId: `node-${nodeId}` });
    const pushes: string[] = [];
    agentSubscriber.on('message', (topic, payload) => {
      if (topic === configPushTopic(configId, nodeId)) pushes.push(payload.toString());
    });
    await agentSubscriber.subscribeAsync(configPushTopic(configId, nodeId), { qos: 1 });

    await waitFor('a sync requested by the reconnection', async () => (await completedConnectSyncs()).length > syncsBefore, 60_000, 100);
    expect(emqx.requests.length).toBeGreaterThan(emqxRequestsBefore);

    // The retried push went out once the broker was back.
    const pushed = await waitFor('the push job to complete', async () => {
      const job = await app.queues.queue(QUEUES.brokerSync).getJob(push.id!);
      return job && (await job.getState()) === 'completed' ? job : undefined;
    }, 60_000, 100);
    expect(pushed.attemptsMade).toBeGreaterThanOrEqual(1);
    // A publish the outage interrupted may still reach the agent late, from the client's
    // outgoing store, under a lower revision (the protocol: apply only a higher one). What
    // counts is that the newest revision the agent holds is the newest state.
    const newest = () => pushes.map((p) => JSON.parse(p) as PushMessage).sort((a, b) => b.revision - a.revision)[0];
    await waitFor('the agent to receive its configuration', async () => newest()?.peers[0]?.endpoint === 'peer.example.com:51820', 10_000, 50);
    expect(newest()).toMatchObject({ nodeId, configId, peers: [expect.objectContaining({ name: 'peer', endpoint: 'peer.example.com:51820' })] });

    // Subscribed again: presence still reaches the database.
    const agent = await mqttClient({ clientId: `status-${nodeId}` });
    await agent.publishAsync(statusTopic(configId, nodeId), 'online', { qos: 1 });
    await waitFor('the node to turn online', async () => {
      const node = await createRepositories(app.uow.fork(), { serverKey: app.serverKey }).nodes.get(nodeId);
      return node?.online;
    }, 20_000, 50);

    expect(worker.proc.exitCode).toBeNull();
    expect(worker.proc.signalCode).toBeNull();
  });

  it('shuts down cleanly while the broker is down', async () => {
    await broker.stop();
    await waitFor('the worker to notice', async () => worker.output().split('MQTT connection lost').length >= 3, 10_000, 50);
    worker.proc.kill('SIGTERM');
    expect(await worker.exited).toBe(0);
  });
});
