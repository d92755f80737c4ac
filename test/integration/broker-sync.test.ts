/**
 * The EMQX credential and authorization sync against the EMQX contract
 * double, on SQLite and PostgreSQL:
 *  - reconcile semantics through the real runner (no BullMQ): users with their hash and
 *    salt, rules, kicks, users meshq does not own, idempotency, failures recorded, and
 *    10,000 users in a number of requests bounded by chunks, not users;
 *  - the queue side with real workers on Redis: coalescing, EMQX down while operations
 *    run and convergence without anyone asking, restores in a row while EMQX flaps;
 *  - MQTT disabled: nothing ever reaches EMQX.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { requestBrokerSync } from '../../src/jobs/broker-requests.js';
import type { Dialect } from '../../src/config.js';
import type { UnitOfWork } from '../../src/db/unit-of-work.js';
import { MeshConfig } from '../../src/domain/entities/mesh.js';
import { generateKeyPair } from '../../src/domain/keys.js';
import { createRepositories, type Repositories } from '../../src/repositories/index.js';
import { hashMqttPassword, newSalt } from '../../src/domain/secrets.js';
import { BrokerApplied } from '../../src/domain/entities/system.js';
import type { JobInput, JobType } from '../../src/jobs/table.js';
import { JobQueues } from '../../src/jobs/queue-client.js';
import { QUEUES } from '../../src/jobs/names.js';
import { createHarness, type Harness } from '../support/harness.js';
import { hashPassword, startEmqxDouble, type EmqxDouble } from '../support/emqx-double.js';
import { DIALECTS, REDIS_URL } from '../support/db.js';
import { seedDynamicNodes } from '../support/broker-data.js';
import { encodeTestSnapshot, generateBusinessTables, uploadSnapshot } from '../support/snapshot-data.js';
import { waitFor } from '../support/processes.js';
import { deletePrefix } from '../support/redis.js';
import { mqttEnv, startStack, type Stack } from '../support/stack.js';

const ADMIN_PASSWORD = 'broker-admin-pw';

type SyncResult = { created: number; updated: number; deleted: number; kicked: number; epoch: number };
type Id = { id: string };

/** Least privilege: its status and acknowledgement out, its config push in, exactly; nothing else. */
const rulesFor = (configId: string, nodeId: string) => [
  { topic: `eq meshq/${configId}/${nodeId}/status`, permission: 'allow', action: 'publish', qos: [0, 1, 2], retain: 'all' },
  { topic: `eq meshq/${configId}/${nodeId}/config/applied`, permission: 'allow', action: 'publish', qos: [0, 1, 2], retain: 'all' },
  { topic: `eq meshq/${configId}/${nodeId}/config/push`, permission: 'allow', action: 'subscribe', qos: [0, 1, 2], retain: 'all' },
  { topic: '#', permission: 'deny', action: 'all', qos: [0, 1, 2], retain: 'all' },
  { topic: '$SYS/#', permission: 'deny', action: 'all', qos: [0, 1, 2], retain: 'all' },
];

/** What earlier versions of meshq wrote: the node's whole subtree, both ways. */
const broadRulesFor = (configId: string, nodeId: string) => [
  { topic: `meshq/${configId}/${nodeId}/#`, permission: 'allow' as const, action: 'publish' as const, qos: [0, 1, 2], retain: 'all' as const },
  { topic: `meshq/${configId}/${nodeId}/#`, permission: 'allow' as const, action: 'subscribe' as const, qos: [0, 1, 2], retain: 'all' as const },
];

const repositories = (uow: UnitOfWork, serverKey: Buffer) => createRepositories(uow.fork(), { serverKey });

/**
 * What a snapshot restore does to the broker's inputs, through repositories in one
 * transaction: bump the data epoch and replace the credentials (every node of the
 * config goes, a new set comes). Then, like a restore, it requests a sync after commit.
 */
async function simulateRestore(uow: UnitOfWork, serverKey: Buffer, configId: string, nodes: number, tag: string): Promise<void> {
  await uow.write(async (em) => {
    const repos = createRepositories(em, { serverKey });
    const net = (await repos.configs.require(configId)).subnet.split('.').slice(0, 2).join('.');
    await repos.system.bumpDataEpoch();
    for (const n of (await repos.nodes.list(configId, {}, { limit: 500 })).items) await repos.nodes.delete(n.id);
    for (let i = 0; i < nodes; i++) {
      const keys = generateKeyPair();
      const id = repos.nodes.create({ configId, name: `${tag}-${i}`, kind: 'dynamic', address: `${net}.77.${i + 2}`, ...keys });
      const salt = newSalt();
      repos.credentials.create(id, { passwordHash: hashMqttPassword(`${tag}-${i}`, salt), salt });
    }
  });
}

/** EMQX holds exactly the desired users (hash and salt) and rules, and nothing else that is ours. */
async function emqxMatchesDatabase(double: EmqxDouble, repos: Repositories): Promise<boolean> {
  const desired = await repos.credentials.brokerCredentials();
  const managed = [...double.users.keys()].filter((u) => u.startsWith('node-'));
  const managedRules = [...double.rules.keys()].filter((u) => u.startsWith('node-'));
  if (managed.length !== desired.length || managedRules.length !== desired.length) return false;
  return desired.every((d) => {
    const u = double.users.get(d.username);
    return (
      u?.password_hash === d.passwordHash &&
      u.salt === d.salt &&
      JSON.stringify(double.rules.get(d.username)) === JSON.stringify(rulesFor(d.configId, d.nodeId))
    );
  });
}

/** Submits a job through the stack's queues as the administrator; it must complete. */
async function completed<T extends JobType>(stack: Stack, type: T, data: JobInput<T>): Promise<Id> {
  const view = await stack.app.queues.waitFor(await stack.app.queues.submit(type, data, { actor: 'admin' }), 20_000);
  expect(view.state, JSON.stringify(view.error)).toBe('completed');
  return view.result as Id;
}

// ---------------------------------------------------------------------------------------
// Reconcile semantics through the real runner

/** The harness, with the broker syncs the runner requested after commits. */
interface Rig extends Harness {
  requested: string[];
  repos(): Repositories;
}

async function createRig(dialect: Dialect, label: string, env: Record<string, string>): Promise<Rig> {
  const requested: string[] = [];
  const h = await createHarness(dialect, label, { env, requestBrokerSync: async (reason) => requested.push(reason) });
  return { ...h, requested, repos: () => repositories(h.uow, h.serverKey) };
}

describe.each(DIALECTS)('broker sync reconcile on %s', (dialect) => {
  let double: EmqxDouble;
  let rig: Rig;
  let seq = 0;

  beforeAll(async () => {
    double = await startEmqxDouble();
    rig = await createRig(dialect, 'broker', mqttEnv(double));
  });
  afterAll(async () => {
    await rig?.close();
    await double?.close();
  });
  // Every test starts from an empty mesh and an empty EMQX.
  beforeEach(async () => {
    await rig.uow.write(async (em) => {
      await em.nativeDelete(MeshConfig, {});
      await em.nativeDelete(BrokerApplied, {});
    });
    double.reset();
    rig.requested.length = 0;
  });

  const sync = () => rig.run<SyncResult>('broker.sync', { reason: 'test' });
  const newConfig = async () => (await rig.run<Id>('config.create', { name: `cfg-${++seq}`, subnet: `10.${seq % 200}.0.0/16` })).id;
  const newNode = async (configId: string, kind: 'dynamic' | 'static') =>
    (await rig.run<Id>('node.create', { configId, name: `n-${++seq}`, kind })).id;
  const syncState = () => rig.repos().system.brokerSyncState();

  it('creates every dynamic node user with its hash and salt and its least-privilege rules; static nodes get none', async () => {
    const configId = await newConfig();
    const dynamic = [await newNode(configId, 'dynamic'), await newNode(configId, 'dynamic'), await newNode(configId, 'dynamic')];
    const statics = [await newNode(configId, 'static'), await newNode(configId, 'static')];
    // The runner asked for a sync after each dynamic node's commit, and only then.
    expect(rig.requested).toEqual(dynamic.map((id) => `node.create ${id}`));
    expect(double.requests).toHaveLength(0);

    expect(await sync()).toEqual({ created: 3, updated: 0, deleted: 0, kicked: 0, epoch: 0 });

    const credentials = await rig.repos().credentials.brokerCredentials();
    for (const nodeId of dynamic) {
      const c = credentials.find((x) => x.nodeId === nodeId)!;
      expect(double.users.get(`node-${nodeId}`)).toEqual({ user_id: `node-${nodeId}`, password_hash: c.passwordHash, salt: c.salt, is_superuser: false });
      expect(double.rules.get(`node-${nodeId}`)).toEqual(rulesFor(configId, nodeId));
    }
    for (const nodeId of statics) {
      expect(double.users.has(`node-${nodeId}`)).toBe(false);
      expect(double.rules.has(`node-${nodeId}`)).toBe(false);
    }
    expect(double.users.size).toBe(3);
    expect(double.rules.size).toBe(3);
    const state = await syncState();
    expect(state.appliedSeq).toBe(state.pendingSeq);
    expect(state.lastError).toBeNull();
    expect(state.lastSyncAt).not.toBeNull();
  });

  it('makes no write request on a second run with nothing changed', async () => {
    const configId = await newConfig();
    await newNode(configId, 'dynamic');
    await newNode(configId, 'dynamic');
    await sync();
    const writes = double.writeRequests();
    const requests = double.requests.length;

    expect(await sync()).toEqual({ created: 0, updated: 0, deleted: 0, kicked: 0, epoch: 0 });
    expect(double.writeRequests()).toBe(writes);
    // A status probe and one page each of users and rules.
    expect(double.requests.length - requests).toBe(3);
  });

  it('applies a rotation: the new hash and salt replace the old, and the session that used the old one is kicked', async () => {
    const configId = await newConfig();
    const nodeId = await newNode(configId, 'dynamic');
    const other = await newNode(configId, 'dynamic');
    await sync();
    double.connected.add(`node-${nodeId}`);
    double.connected.add(`node-${other}`);

    const password = 'correct horse battery staple';
    const salt = newSalt();
    await rig.run('node.rotate-credentials', { nodeId, passwordHash: hashMqttPassword(password, salt), salt });
    expect(rig.requested).toContain(`node.rotate-credentials ${nodeId}`);

    expect(await sync()).toEqual({ created: 0, updated: 1, deleted: 0, kicked: 1, epoch: 0 });
    const user = double.users.get(`node-${nodeId}`)!;
    expect(user.salt).toBe(salt);
    // EMQX's own check of the new password against what it stores.
    expect(hashPassword(user.salt, password)).toBe(user.password_hash);
    expect(double.kicked).toEqual([`node-${nodeId}`]);
    expect(double.connected.has(`node-${other}`)).toBe(true);
    expect(double.rules.get(`node-${nodeId}`)).toEqual(rulesFor(configId, nodeId));
  });

  it('removes a deleted node user and rules and kicks its session; a deleted config takes all of its users', async () => {
    const configId = await newConfig();
    const gone = await newNode(configId, 'dynamic');
    const kept = await newNode(configId, 'dynamic');
    await sync();
    double.connected.add(`node-${gone}`);
    double.connected.add(`node-${kept}`);

    await rig.run('node.delete', { id: gone });
    expect(rig.requested).toContain(`node.delete ${gone}`);
    expect(await sync()).toEqual({ created: 0, updated: 0, deleted: 1, kicked: 1, epoch: 0 });
    expect(double.users.has(`node-${gone}`)).toBe(false);
    expect(double.rules.has(`node-${gone}`)).toBe(false);
    expect(double.kicked).toEqual([`node-${gone}`]);
    expect(double.users.has(`node-${kept}`)).toBe(true);
    expect([...(await rig.repos().brokerApplied.all()).keys()]).toEqual([`node-${kept}`]);

    await rig.run('config.delete', { id: configId });
    expect(await sync()).toMatchObject({ deleted: 1, kicked: 1 });
    expect(double.users.size).toBe(0);
    expect(double.rules.size).toBe(0);
    expect((await rig.repos().brokerApplied.all()).size).toBe(0);
  });

  it('never touches users and rules outside the node- prefix, even when their names contain it', async () => {
    const foreign = {
      dashboard: { user_id: 'dashboard', password_hash: 'a'.repeat(64), salt: 's1', is_superuser: true },
      'my-node-1': { user_id: 'my-node-1', password_hash: 'b'.repeat(64), salt: 's2', is_superuser: false },
    };
    const foreignRules = [{ topic: 'anything/#', permission: 'allow' as const, action: 'all' as const, qos: [0, 1, 2], retain: 'all' as const }];
    for (const u of Object.values(foreign)) double.users.set(u.user_id, { ...u });
    double.rules.set('my-node-1', foreignRules);
    double.rules.set('dashboard', foreignRules);

    const configId = await newConfig();
    const a = await newNode(configId, 'dynamic');
    await sync();
    const salt = newSalt();
    await rig.run('node.rotate-credentials', { nodeId: a, passwordHash: hashMqttPassword('x', salt), salt });
    await sync();
    await rig.run('node.delete', { id: a });
    await sync();
    await sync();

    expect(double.users.get('dashboard')).toEqual(foreign.dashboard);
    expect(double.users.get('my-node-1')).toEqual(foreign['my-node-1']);
    expect(double.rules.get('dashboard')).toEqual(foreignRules);
    expect(double.rules.get('my-node-1')).toEqual(foreignRules);
    expect(double.users.size).toBe(2);
  });

  it('repairs drift in EMQX: a lost user, lost rules and changed rules come back on the next sync', async () => {
    const configId = await newConfig();
    const a = await newNode(configId, 'dynamic');
    const b = await newNode(configId, 'dynamic');
    const c = await newNode(configId, 'dynamic');
    await sync();
    const userA = double.users.get(`node-${a}`)!;
    double.users.delete(`node-${a}`);
    double.rules.delete(`node-${b}`);
    double.rules.set(`node-${c}`, [{ topic: '#', permission: 'allow', action: 'all', qos: [0, 1, 2], retain: 'all' }]);

    expect(await sync()).toMatchObject({ created: 1, updated: 0, deleted: 0, kicked: 0 });
    expect(double.users.get(`node-${a}`)).toEqual(userA);
    expect(double.rules.get(`node-${b}`)).toEqual(rulesFor(configId, b));
    expect(double.rules.get(`node-${c}`)).toEqual(rulesFor(configId, c));
    expect(await emqxMatchesDatabase(double, rig.repos())).toBe(true);
  });

  it('replaces the broad rules of existing users with least-privilege ones once, without touching the users', async () => {
    const configId = await newConfig();
    const nodes = [await newNode(configId, 'dynamic'), await newNode(configId, 'dynamic')];
    await sync();
    for (const n of nodes) double.rules.set(`node-${n}`, broadRulesFor(configId, n));
    const users = new Map(double.users);
    const before = double.requests.length;

    expect(await sync()).toEqual({ created: 0, updated: 0, deleted: 0, kicked: 0, epoch: 0 });
    const puts = double.requests.slice(before).filter((r) => r.method !== 'GET');
    expect(puts.map((r) => r.method)).toEqual(['PUT', 'PUT']);
    for (const n of nodes) expect(double.rules.get(`node-${n}`)).toEqual(rulesFor(configId, n));
    expect(double.users).toEqual(users);

    const writes = double.writeRequests();
    await sync();
    expect(double.writeRequests()).toBe(writes);
  });

  it('fails retryably when EMQX is down or not running, records why, and leaves the work pending', async () => {
    const configId = await newConfig();
    const nodeId = await newNode(configId, 'dynamic');
    double.setFault('down');
    await double.settled();

    const err = await rig.error('broker.sync', {});
    expect(err.name).not.toBe('UnrecoverableError');
    let state = await syncState();
    expect(state.lastError).toMatch(/^UNREACHABLE: EMQX API GET \/status/);
    expect(state.pendingSeq).toBeGreaterThan(state.appliedSeq);
    // The operation's data is untouched by the failed sync.
    expect(await rig.repos().credentials.forNode(nodeId)).toBeDefined();

    double.setFault('503');
    await double.settled();
    await rig.error('broker.sync', {});
    expect((await syncState()).lastError).toMatch(/^NOT_RUNNING/);

    double.setFault('none');
    expect(await sync()).toMatchObject({ created: 1 });
    state = await syncState();
    expect(state.lastError).toBeNull();
    expect(state.appliedSeq).toBe(state.pendingSeq);
  });

  it('skips a scheduled run when nothing is pending and runs it when something is', async () => {
    const configId = await newConfig();
    await newNode(configId, 'dynamic');
    await sync();
    const requests = double.requests.length;
    expect(await rig.run('broker.sync', { reason: 'scheduled' })).toEqual({ created: 0, updated: 0, deleted: 0, kicked: 0, epoch: 0 });
    expect(double.requests.length).toBe(requests);

    await newNode(configId, 'dynamic');
    expect(await rig.run('broker.sync', { reason: 'scheduled' })).toMatchObject({ created: 1 });

    // A restore (a newer data epoch) is pending too, even with every credential applied.
    await rig.uow.write((em) => createRepositories(em, { serverKey: rig.serverKey }).system.bumpDataEpoch());
    expect(await rig.run('broker.sync', { reason: 'scheduled' })).toEqual({ created: 0, updated: 0, deleted: 0, kicked: 0, epoch: 1 });
    expect((await syncState()).syncedEpoch).toBe(1);
  });

  it('syncs 10,000 credentials from empty in a number of requests bounded by chunks, then makes no write', async () => {
    const configId = await newConfig();
    await seedDynamicNodes(rig.uow, configId, 10_000);

    let started = Date.now();
    let requests = double.requests.length;
    expect(await sync()).toMatchObject({ created: 10_000, updated: 0, deleted: 0, kicked: 0 });
    const firstMs = Date.now() - started;
    const firstRequests = double.requests.length - requests;
    expect(double.users.size).toBe(10_000);
    expect(double.rules.size).toBe(10_000);
    // status + one empty page of users and of rules + 10 rule chunks + 10 import chunks.
    expect(firstRequests).toBeLessThan(40);

    started = Date.now();
    requests = double.requests.length;
    const writes = double.writeRequests();
    expect(await sync()).toMatchObject({ created: 0, updated: 0, deleted: 0, kicked: 0 });
    expect(double.writeRequests()).toBe(writes);
    expect(double.requests.length - requests).toBeLessThan(40);
    expect(await emqxMatchesDatabase(double, rig.repos())).toBe(true);
    console.info(`[${dialect}] 10,000 credentials: first sync ${firstMs} ms / ${firstRequests} requests; second ${Date.now() - started} ms`);
  });
});

// ---------------------------------------------------------------------------------------
// Through the queues, with real workers on Redis

describe.each(DIALECTS)('broker sync through the queues on %s', (dialect) => {
  let double: EmqxDouble;
  let stack: Stack;
  let seq = 0;

  beforeAll(async () => {
    double = await startEmqxDouble();
    stack = await startStack(dialect, 'broker_q', {
      adminPassword: ADMIN_PASSWORD,
      // The workers' MQTT link (config pushes after a restore's sync) uses the shared Mosquitto.
      env: { ...mqttEnv(double), WORKER_CONCURRENCY: '4' },
      // A short schedule so that convergence without a request happens within a test.
      workerOptions: { brokerReconcileEveryMs: 300, shutdownTimeoutMs: 5_000 },
    });
  });
  afterAll(async () => {
    await stack?.stop();
    await double?.close();
  });
  afterEach(async () => {
    double.setFault('none');
    await double.settled();
  });

  const repos = () => repositories(stack.app.uow, stack.app.serverKey);
  const submit = <T extends JobType>(type: T, data: JobInput<T>) => completed(stack, type, data);
  const newConfig = async () => (await submit('config.create', { name: `q-${++seq}`, subnet: `10.${100 + (seq % 100)}.0.0/16` })).id;
  const newNode = async (configId: string) => (await submit('node.create', { configId, name: `qn-${++seq}`, kind: 'dynamic' })).id;
  const status = async () => {
    const res = await stack.call({ method: 'GET', url: '/api/v1/broker/status' });
    expect(res.statusCode, res.body).toBe(200);
    return res.json() as Record<string, unknown>;
  };
  const converged = async () => {
    const s = await status();
    return s.pending === false && s.lastError === null && (await emqxMatchesDatabase(double, repos())) && s;
  };
  /** Waits until EMQX equals the database as of the given data epoch (the last restore's). */
  const convergedAt = (epoch: number) =>
    waitFor('EMQX to equal the last restore', async () => {
      const s = await converged();
      return s && s.syncedEpoch === epoch && s;
    }, 30_000);
  const jobView = async (id: string) => (await stack.call({ method: 'GET', url: `/api/v1/jobs/${id}` })).json();

  it('brings credential changes to EMQX after commit without anyone asking for a sync', async () => {
    const configId = await newConfig();
    const ids = await Promise.all([newNode(configId), newNode(configId), newNode(configId)]);
    await waitFor('EMQX to have the new users', async () => ids.every((id) => double.users.has(`node-${id}`)), 15_000);
    await waitFor('the sync to settle', converged, 15_000);
    expect(await status()).toMatchObject({ enabled: true, state: 'synced', reachable: true, pending: false, epoch: 0, syncedEpoch: 0 });
  });

  it('coalesces requests: a waiting sync absorbs them, and one made during an active sync runs once after it', async () => {
    // Without a worker on this prefix the first job stays waiting: every request returns it.
    const idle = new JobQueues({ redisUrl: REDIS_URL, queuePrefix: `${stack.app.config.queuePrefix}-idle` }, stack.app.serverKey);
    try {
      const jobs = await Promise.all(Array.from({ length: 20 }, (_, i) => requestBrokerSync(idle, `r${i}`)));
      expect(new Set(jobs.map((j) => j.id)).size).toBe(1);
      expect(await idle.queue(QUEUES.brokerSync).getJobCounts('waiting', 'delayed', 'active')).toEqual({ waiting: 1, delayed: 0, active: 0 });
    } finally {
      await idle.close();
      await deletePrefix(`${stack.app.config.queuePrefix}-idle`);
    }

    // With workers: hold a sync active on a slow EMQX, then ask again and again.
    double.setFault('slow', { delayMs: 700 });
    const first = await requestBrokerSync(stack.app.queues, 'first');
    await waitFor('the first sync to be active', async () => (await first.getState()) === 'active', 10_000, 20);
    const during = await Promise.all(Array.from({ length: 10 }, (_, i) => requestBrokerSync(stack.app.queues, `during-${i}`)));
    expect(new Set(during.map((j) => j.id))).toEqual(new Set([first.id]));
    double.setFault('none');

    const queue = stack.app.queues.queue(QUEUES.brokerSync);
    const requested = async () =>
      (await queue.getJobs(['waiting', 'active', 'delayed', 'completed', 'failed'])).filter(
        (j) => j && j.name === 'broker.sync' && !j.id!.startsWith('repeat:') && j.timestamp >= first.timestamp,
      );
    // Exactly one follow-up: the first sync, then one more for all ten requests.
    await waitFor('the follow-up sync to complete', async () => {
      const jobs = await requested();
      return jobs.length === 2 && (await Promise.all(jobs.map((j) => j.getState()))).every((s) => s === 'completed');
    }, 15_000);
    await new Promise((r) => setTimeout(r, 500));
    expect(await requested()).toHaveLength(2);
  });

  it('lets operations succeed while EMQX is down, reports pending with the error, and converges once it is back', async () => {
    const configId = await newConfig();
    const existing = await newNode(configId);
    await waitFor('the first sync', converged, 15_000);

    double.setFault('down');
    await double.settled();
    const added = await Promise.all([newNode(configId), newNode(configId)]);
    const salt = newSalt();
    await submit('node.rotate-credentials', { nodeId: existing, passwordHash: hashMqttPassword('new one', salt), salt });
    await submit('node.delete', { id: added[0] });

    const down = await waitFor('the failure to show', async () => {
      const s = await status();
      return s.lastError !== null && s;
    }, 15_000);
    expect(down).toMatchObject({ enabled: true, state: 'error', reachable: false, pending: true });
    expect(String(down.lastError)).toMatch(/UNREACHABLE/);

    double.setFault('none');
    await double.settled();
    // Nobody asks: the job's retry or the scheduled reconcile finds the pending work.
    const back = await waitFor('EMQX to converge', converged, 20_000);
    expect(back).toMatchObject({ state: 'synced', reachable: true, pending: false, lastError: null });
    expect(double.users.get(`node-${existing}`)?.salt).toBe(salt);
    expect(double.users.has(`node-${added[0]}`)).toBe(false);
    expect(double.users.has(`node-${added[1]}`)).toBe(true);
  });

  // snapshot.restore does not exist yet: a restore is simulated by what it does to the
  // sync's inputs (epoch bumped, credentials replaced, a sync requested after commit).
  it('ends with EMQX equal to the latest of five restores in a row while EMQX flaps', async () => {
    const configId = await newConfig();
    await newNode(configId);
    await waitFor('the first sync', converged, 15_000);
    const epochBefore = await repos().system.dataEpoch();

    for (let i = 1; i <= 5; i++) {
      double.setFault(i % 2 === 1 ? 'down' : 'none');
      await simulateRestore(stack.app.uow, stack.app.serverKey, configId, 3, `restore-${i}`);
      await requestBrokerSync(stack.app.queues, `restore ${i}`);
      await new Promise((r) => setTimeout(r, 150));
    }
    double.setFault('none');
    await double.settled();

    const final = await convergedAt(epochBefore + 5);
    expect(final).toMatchObject({ epoch: epochBefore + 5, syncedEpoch: epochBefore + 5, state: 'synced' });
    const names = (await repos().nodes.list(configId)).items.map((n) => n.name).sort();
    expect(names).toEqual(['restore-5-0', 'restore-5-1', 'restore-5-2']);
  });

  it('answers POST /api/v1/broker/sync with the sync job, 202, and its result when waited for', async () => {
    const res = await stack.call({ method: 'POST', url: '/api/v1/broker/sync' });
    expect(res.statusCode, res.body).toBe(202);
    expect(res.json()).toMatchObject({ type: 'broker.sync', queue: 'broker-sync' });

    const waited = await stack.call({ method: 'POST', url: '/api/v1/broker/sync?wait=10000' });
    expect([200, 202]).toContain(waited.statusCode);
    await waitFor('a requested sync to complete', async () => {
      const view = await jobView(waited.json().id);
      return view.state === 'completed' && view;
    }, 15_000);
  });

  it('ends with EMQX equal to the last of five real snapshot restores in a row while EMQX flaps', async () => {
    const sets = [1, 2, 3, 4, 5].map((i) => generateBusinessTables({ label: `snap${i}`, nodesPerConfig: 8, serverKey: stack.app.serverKey }));
    const files = await Promise.all(sets.map((tables) => encodeTestSnapshot(tables, ADMIN_PASSWORD)));
    const epochBefore = await repos().system.dataEpoch();

    const restores: string[] = [];
    for (const [i, file] of files.entries()) {
      double.setFault(i % 2 === 0 ? 'down' : 'none');
      const res = await uploadSnapshot(stack.api, stack.auth, file, ADMIN_PASSWORD);
      expect(res.statusCode, res.body).toBe(202);
      restores.push(res.json().id);
      await new Promise((r) => setTimeout(r, 100));
    }
    await waitFor('the five restores', async () => {
      const views = await Promise.all(restores.map(jobView));
      if (views.some((v) => v.state === 'failed')) throw new Error(`a restore failed: ${JSON.stringify(views)}`);
      return views.every((v) => v.state === 'completed');
    }, 30_000);
    double.setFault('none');
    await double.settled();

    const final = await convergedAt(epochBefore + 5);
    expect(final).toMatchObject({ epoch: epochBefore + 5, state: 'synced' });
    const last = sets[4]!.mqtt_credential!;
    const managed = [...double.users.keys()].filter((u) => u.startsWith('node-')).sort();
    expect(managed).toEqual(last.map((c) => c.username as string).sort());
    for (const c of last) expect(double.users.get(c.username as string)).toMatchObject({ password_hash: c.password_hash, salt: c.salt });
  });
});

// ---------------------------------------------------------------------------------------
// MQTT disabled

describe('broker sync with MQTT disabled', () => {
  let double: EmqxDouble;
  let stack: Stack;

  beforeAll(async () => {
    double = await startEmqxDouble();
    stack = await startStack('sqlite', 'broker_off', {
      adminPassword: ADMIN_PASSWORD,
      // EMQX settings point at the double: any call at all would show up in its log.
      env: mqttEnv(double, false),
      workerOptions: { brokerReconcileEveryMs: 200, shutdownTimeoutMs: 5_000 },
    });
  });
  afterAll(async () => {
    await stack?.stop();
    await double?.close();
  });

  it('sends nothing to EMQX for credential changes, keeps the work recorded, and says disabled', async () => {
    const submit = <T extends JobType>(type: T, data: JobInput<T>) => completed(stack, type, data);
    const { id: configId } = await submit('config.create', { name: 'off', subnet: '10.9.0.0/24' });
    const a = await submit('node.create', { configId, name: 'a', kind: 'dynamic' });
    const b = await submit('node.create', { configId, name: 'b', kind: 'dynamic' });
    const rotated = await stack.call({ method: 'POST', url: `/api/v1/nodes/${a.id}/credentials?wait=10000` });
    expect(rotated.statusCode, rotated.body).toBe(200);
    await submit('node.delete', { id: b.id });
    await new Promise((r) => setTimeout(r, 600)); // several schedule periods, were there one

    expect(double.requests).toHaveLength(0);
    const queue = stack.app.queues.queue(QUEUES.brokerSync);
    expect(await queue.getJobSchedulers()).toEqual([]);
    const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'completed', 'failed');
    expect(Object.values(counts).every((n) => n === 0)).toBe(true);

    const status = (await stack.call({ method: 'GET', url: '/api/v1/broker/status' })).json();
    expect(status).toMatchObject({ enabled: false, state: 'disabled', reachable: null, pending: true, lastError: null });
    expect(status.pendingSeq).toBeGreaterThanOrEqual(3);

    const refused = await stack.call({ method: 'POST', url: '/api/v1/broker/sync' });
    expect(refused.statusCode).toBe(409);
    expect(refused.json().error.code).toBe('MQTT_DISABLED');
    expect(double.requests).toHaveLength(0);
  });
});
