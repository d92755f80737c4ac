/**
 * Keys and topology, through the API, real workers, the real Mosquitto and the EMQX
 * double, on both dialects:
 * - node.rotate-keys: a node whose key meshq holds gets a new pair; its peers receive the
 *   new public key (pushes and wireguard.conf); an agent-held node is refused.
 * - agent-held keys (node.create with publicKey): no private key stored, in any push or in
 *   the rendered file; its peers see its public key; node.update {publicKey} propagates.
 * - link.create / link.delete: one pair, both directions, shared linkGroupId; a pair
 *   exists once; deleting by either direction's id removes both; pushes follow.
 * - GET /nodes/:id/wireguard.conf: an INI file with the right peers; scope credentials
 *   when it carries a private key, read otherwise.
 * - snapshots: agent-held nodes and single links survive an export and a restore.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type MqttClient } from 'mqtt';
import type { PushedConfig } from '../../src/jobs/processors/push-config.js';
import { generateKeyPair, publicKeyFromPrivate } from '../../src/domain/keys.js';
import { newId } from '../../src/domain/ids.js';
import { hashToken } from '../../src/domain/secrets.js';
import type { Scope } from '../../src/domain/scopes.js';
import { createRepositories } from '../../src/repositories/index.js';
import type { NodeView } from '../../src/repositories/nodes.js';
import { connectOrm } from '../../src/db/orm.js';
import { migrateUnderLock } from '../../src/db/migrate.js';
import { MIGRATIONS } from '../../src/migrations/index.js';
import { createTestDatabase, DIALECTS } from '../support/db.js';
import { startEmqxDouble, type EmqxDouble } from '../support/emqx-double.js';
import { SHARED_MQTT_URL } from '../support/mosquitto.js';
import { waitFor } from '../support/processes.js';
import { uploadSnapshot } from '../support/snapshot-data.js';
import { mqttEnv, startStack, type Stack } from '../support/stack.js';
import { parseWgIni } from '../support/wg-ini.js';

const ADMIN_PASSWORD = 'keys-and-links-admin-pw';
const PUSH_WAIT_MS = 20_000;

interface Received {
  nodeId: string;
  text: string;
  body: PushedConfig;
}

describe.each(DIALECTS)('keys and links on %s', (dialect) => {
  let emqx: EmqxDouble;
  let s: Stack;
  let subscriber: MqttClient;
  const received: Received[] = [];
  let configId: string;
  /** Dynamic, key held by meshq. */
  let alpha: NodeView;
  /** Dynamic, key held by its agent (the test plays the agent and keeps the private key). */
  let bravo: NodeView;
  const bravoKeys = generateKeyPair();
  /** Static, key held by meshq. */
  let charlie: NodeView;
  /** Static, key held by its operator. */
  let delta: NodeView;
  const deltaKeys = generateKeyPair();
  const tokens: Record<string, Record<string, string>> = {};

  const repos = () => createRepositories(s.app.uow.fork(), { serverKey: s.app.serverKey });
  const node = async (id: string) => (await repos().nodes.get(id))!;

  async function storeToken(name: string, scopes: Scope[]): Promise<Record<string, string>> {
    const id = newId();
    const token = `mq_test_${id}`;
    await s.app.uow.write(async (em) => {
      createRepositories(em, { serverKey: s.app.serverKey }).tokens.create({ id, name, tokenHash: hashToken(token), scopes, expiresAt: null });
    });
    return { authorization: `Bearer ${token}` };
  }

  async function createNode(data: Record<string, unknown>): Promise<NodeView> {
    const job = await s.job('node.create', { configId, ...data });
    expect(job.state, JSON.stringify(job.error)).toBe('completed');
    return node(job.result!.id as string);
  }

  /** The newest push a node received since `after` (an index into `received`) that satisfies `ok`. */
  const pushTo = (nodeId: string, ok: (m: Received) => boolean, after = 0) =>
    waitFor(
      `a push to ${nodeId}`,
      async () => received.slice(after).filter((m) => m.nodeId === nodeId && ok(m)).at(-1),
      PUSH_WAIT_MS,
    );

  const peerKeys = (m: Received) => m.body.peers.map((p) => p.publicKey).sort();

  async function conf(id: string, headers?: Record<string, string>) {
    return s.api.inject({ method: 'GET', url: `/api/v1/nodes/${id}/wireguard.conf`, headers: headers ?? s.auth });
  }

  async function confPeers(id: string): Promise<string[]> {
    const res = await conf(id);
    expect(res.statusCode, res.body).toBe(200);
    return parseWgIni(res.body)
      .filter((x) => x.section === 'Peer')
      .map((x) => x.values.PublicKey!)
      .sort();
  }

  beforeAll(async () => {
    emqx = await startEmqxDouble();
    s = await startStack(dialect, 'keys_links', { adminPassword: ADMIN_PASSWORD, env: mqttEnv(emqx) });
    await s.pool!.mqtt!.ready();
    tokens.read = await storeToken('only-read', ['read']);
    tokens.credentials = await storeToken('only-credentials', ['credentials']);
    tokens.both = await storeToken('read-and-credentials', ['read', 'credentials']);

    configId = (await s.job('config.create', { name: 'keys', subnet: '10.81.0.0/24', dns: ['10.81.0.1'] })).result!.id as string;
    subscriber = connect(SHARED_MQTT_URL, { reconnectPeriod: 0 });
    subscriber.on('message', (topic, payload) => {
      const text = payload.toString('utf8');
      received.push({ nodeId: topic.split('/')[2]!, text, body: JSON.parse(text) as PushedConfig });
    });
    await new Promise<void>((resolve) => subscriber.once('connect', () => resolve()));
    await subscriber.subscribeAsync(`meshq/${configId}/+/config/push`, { qos: 1 });

    alpha = await createNode({ name: 'alpha', kind: 'dynamic', endpoint: 'alpha.example.com:51820' });
    bravo = await createNode({ name: 'bravo', kind: 'dynamic', publicKey: bravoKeys.publicKey });
    charlie = await createNode({ name: 'charlie', kind: 'static', endpoint: '203.0.113.30:51820' });
    delta = await createNode({ name: 'delta', kind: 'static', endpoint: '203.0.113.40:51820', publicKey: deltaKeys.publicKey });
    expect((await s.job('mesh.generate', { configId })).result).toEqual({ created: 6 });
  });

  afterAll(async () => {
    await subscriber?.endAsync();
    await s?.stop();
    await emqx?.close();
  });

  it('creates an agent-held node without a private key: its key mode shows, and its peers push its public key', async () => {
    expect(bravo).toMatchObject({ publicKey: bravoKeys.publicKey, keyMode: 'agent' });
    expect(alpha.keyMode).toBe('server');
    expect(await repos().nodes.privateKey(bravo.id)).toBeNull();
    expect(await repos().nodes.privateKey(delta.id)).toBeNull();
    const shown = await s.get<Record<string, unknown>>(`/api/v1/nodes/${bravo.id}`);
    expect(shown).toMatchObject({ keyMode: 'agent', publicKey: bravoKeys.publicKey });

    const others = (id: string) => [alpha, bravo, charlie, delta].filter((n) => n.id !== id).map((n) => n.publicKey).sort();
    const toAlpha = await pushTo(alpha.id, (m) => m.body.peers.length === 3);
    expect(peerKeys(toAlpha)).toEqual(others(alpha.id));
    expect(toAlpha.body.interface.privateKey).toBe(await repos().nodes.privateKey(alpha.id));

    const toBravo = await pushTo(bravo.id, (m) => m.body.peers.length === 3);
    expect(peerKeys(toBravo)).toEqual(others(bravo.id));
    expect(toBravo.body.interface).toMatchObject({ publicKey: bravoKeys.publicKey, address: bravo.address });
    expect(toBravo.body.interface).not.toHaveProperty('privateKey');
  });

  it('refuses a malformed or already used public key, creating nothing', async () => {
    const before = (await repos().nodes.list(configId)).items.length;
    const bad = await s.call({ method: 'POST', url: '/api/v1/jobs', payload: { type: 'node.create', data: { configId, name: 'x1', kind: 'static', publicKey: 'not-a-key' } } });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.message).toMatch(/publicKey: is not a WireGuard key/);
    const dup = await s.job('node.create', { configId, name: 'x2', kind: 'static', publicKey: bravoKeys.publicKey });
    expect(dup.state).toBe('failed');
    expect(dup.error).toMatchObject({ code: 'CONFLICT', message: expect.stringContaining('"bravo"') });
    expect((await repos().nodes.list(configId)).items.length).toBe(before);
  });

  it('node.rotate-keys gives a server-held node a new pair; its peers receive the new public key', async () => {
    const oldPrivate = (await repos().nodes.privateKey(alpha.id))!;
    const mark = received.length;
    const job = await s.job('node.rotate-keys', { id: alpha.id });
    expect(job.state, JSON.stringify(job.error)).toBe('completed');
    const newPublic = job.result!.publicKey as string;
    expect(job.result).toEqual({ id: alpha.id, publicKey: newPublic });
    expect(newPublic).not.toBe(alpha.publicKey);
    // The job result carries the public key only.
    expect(JSON.stringify(job)).not.toContain((await repos().nodes.privateKey(alpha.id))!);

    const newPrivate = (await repos().nodes.privateKey(alpha.id))!;
    expect(newPrivate).not.toBe(oldPrivate);
    expect(publicKeyFromPrivate(newPrivate)).toBe(newPublic);
    expect((await node(alpha.id)).publicKey).toBe(newPublic);

    // Its dynamic peer by push, its static peers in their file, itself with its new private key.
    const toBravo = await pushTo(bravo.id, (m) => peerKeys(m).includes(newPublic), mark);
    expect(peerKeys(toBravo)).not.toContain(alpha.publicKey);
    const toAlpha = await pushTo(alpha.id, (m) => m.body.interface.publicKey === newPublic, mark);
    expect(toAlpha.body.interface.privateKey).toBe(newPrivate);
    expect(await confPeers(charlie.id)).toContain(newPublic);
    alpha = await node(alpha.id);
  });

  it('node.rotate-keys refuses an agent-held node (INVALID) and changes nothing', async () => {
    const job = await s.job('node.rotate-keys', { id: bravo.id });
    expect(job.state).toBe('failed');
    expect(job.error).toMatchObject({ code: 'INVALID', message: expect.stringMatching(/holds its own key.*node\.update/) });
    expect(await node(bravo.id)).toMatchObject({ publicKey: bravoKeys.publicKey, keyMode: 'agent' });
    expect(await repos().nodes.privateKey(bravo.id)).toBeNull();
  });

  it('node.rotate-keys needs the credentials scope', async () => {
    const payload = { type: 'node.rotate-keys', data: { id: alpha.id } };
    const refused = await s.api.inject({ method: 'POST', url: '/api/v1/jobs', headers: tokens.read!, payload });
    expect(refused.statusCode).toBe(403);
    expect(refused.json().error.message).toBe('token "only-read" lacks scope "credentials"');
  });

  it("node.update {publicKey} rotates an agent-held node's key and its peers receive it; no private key ever appears", async () => {
    const next = generateKeyPair();
    const mark = received.length;
    const job = await s.job('node.update', { id: bravo.id, publicKey: next.publicKey });
    expect(job.state, JSON.stringify(job.error)).toBe('completed');
    expect(await node(bravo.id)).toMatchObject({ publicKey: next.publicKey, keyMode: 'agent' });
    expect(await repos().nodes.privateKey(bravo.id)).toBeNull();

    const toAlpha = await pushTo(alpha.id, (m) => peerKeys(m).includes(next.publicKey), mark);
    expect(peerKeys(toAlpha)).not.toContain(bravoKeys.publicKey);
    expect(await confPeers(charlie.id)).toContain(next.publicKey);
    const toBravo = await pushTo(bravo.id, (m) => m.body.interface.publicKey === next.publicKey, mark);
    expect(toBravo.body.interface).not.toHaveProperty('privateKey');

    // Nothing sent to the agent-held node ever carried a private key.
    const bravoPushes = received.filter((m) => m.nodeId === bravo.id);
    expect(bravoPushes.length).toBeGreaterThan(0);
    for (const m of bravoPushes) expect(m.text).not.toMatch(/privateKey/i);
    bravo = await node(bravo.id);
  });

  it("node.update {publicKey} refuses another node's key, and hands a server-held node's key over to its agent", async () => {
    const taken = await s.job('node.update', { id: charlie.id, publicKey: bravo.publicKey });
    expect(taken.state).toBe('failed');
    expect(taken.error).toMatchObject({ code: 'CONFLICT', message: expect.stringContaining('"bravo"') });
    expect(await node(charlie.id)).toMatchObject({ publicKey: charlie.publicKey, keyMode: 'server' });

    const handed = await createNode({ name: 'foxtrot', kind: 'static' });
    expect(handed.keyMode).toBe('server');
    const own = generateKeyPair();
    expect((await s.job('node.update', { id: handed.id, publicKey: own.publicKey })).state).toBe('completed');
    expect(await node(handed.id)).toMatchObject({ publicKey: own.publicKey, keyMode: 'agent' });
    expect(await repos().nodes.privateKey(handed.id)).toBeNull();
    const file = await conf(handed.id, tokens.read);
    expect(file.statusCode).toBe(200);
    expect(file.body).not.toMatch(/^PrivateKey/m);
    expect((await s.job('node.delete', { id: handed.id })).state).toBe('completed');
  });

  it('serves wireguard.conf as an INI attachment with one peer per link and the private key only where meshq holds it', async () => {
    const res = await conf(charlie.id);
    expect(res.statusCode, res.body).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain/);
    expect(res.headers['content-disposition']).toBe('attachment; filename="charlie.conf"');
    const sections = parseWgIni(res.body);
    const iface = sections.find((x) => x.section === 'Interface')!.values;
    expect(iface).toMatchObject({ Address: `${charlie.address}/24`, ListenPort: '51820', DNS: '10.81.0.1', MTU: '1420' });
    expect(publicKeyFromPrivate(iface.PrivateKey!)).toBe(charlie.publicKey);
    const peers = sections.filter((x) => x.section === 'Peer').map((x) => x.values);
    const expected = [alpha, bravo, delta].map((p) => ({
      PublicKey: p.publicKey,
      ...(p.endpoint ? { Endpoint: p.endpoint } : {}),
      AllowedIPs: `${p.address}/32`,
      PersistentKeepalive: '25',
    }));
    const byKey = (a: { PublicKey?: string }, b: { PublicKey?: string }) => a.PublicKey!.localeCompare(b.PublicKey!);
    expect(peers.sort(byKey)).toEqual(expected.sort(byKey));

    const agentHeld = await conf(delta.id);
    expect(agentHeld.statusCode).toBe(200);
    expect(parseWgIni(agentHeld.body)[0]!.values).not.toHaveProperty('PrivateKey');
    const dynamicAgentHeld = await conf(bravo.id);
    expect(dynamicAgentHeld.statusCode).toBe(200);
    expect(dynamicAgentHeld.body).not.toMatch(/^PrivateKey/m);
  });

  it('needs read and credentials for a wireguard.conf that carries a private key, read alone for one that does not', async () => {
    for (const held of [alpha, charlie]) {
      const refused = await conf(held.id, tokens.read);
      expect(refused.statusCode).toBe(403);
      expect(refused.json()).toEqual({ error: { code: 'FORBIDDEN', message: 'token "only-read" lacks scope "credentials"' } });
      const allowed = await conf(held.id, tokens.both);
      expect(allowed.statusCode).toBe(200);
      expect(allowed.body).toMatch(/^PrivateKey = /m);
    }
    for (const agentHeld of [bravo, delta]) {
      expect((await conf(agentHeld.id, tokens.read)).statusCode).toBe(200);
    }
    // Every wireguard.conf is a read first: a credentials-only token lacks read.
    for (const any of [charlie, delta]) {
      const res = await conf(any.id, tokens.credentials);
      expect(res.statusCode).toBe(403);
      expect(res.json().error.message).toBe('token "only-credentials" lacks scope "read"');
    }
    expect((await conf(newId(), tokens.read)).statusCode).toBe(404);
  });

  it('link.create makes one pair (both directions, one linkGroupId) that exists once; link.delete by either id removes both', async () => {
    const echo = await createNode({ name: 'echo', kind: 'static', endpoint: 'echo.example.net:51820' });
    let mark = received.length;
    const created = await s.job('link.create', { configId, fromNodeId: alpha.id, toNodeId: echo.id, allowedIps: ['10.81.0.0/24', '192.168.50.0/24'], persistentKeepalive: 10 });
    expect(created.state, JSON.stringify(created.error)).toBe('completed');
    const { id, reverseId, linkGroupId } = created.result as { id: string; reverseId: string; linkGroupId: string };
    const pair = (await repos().links.list(configId, {}, { limit: 100 })).items.filter((l) => l.linkGroupId === linkGroupId);
    expect(pair.map((l) => ({ id: l.id, from: l.fromNodeId, to: l.toNodeId, allowedIps: l.allowedIps, keepalive: l.persistentKeepalive })).sort((a, b) => a.id.localeCompare(b.id))).toEqual(
      [
        { id, from: alpha.id, to: echo.id, allowedIps: ['10.81.0.0/24', '192.168.50.0/24'], keepalive: 10 },
        { id: reverseId, from: echo.id, to: alpha.id, allowedIps: [`${alpha.address}/32`], keepalive: 10 },
      ].sort((a, b) => a.id.localeCompare(b.id)),
    );

    // The pushed and rendered views follow.
    const toAlpha = await pushTo(alpha.id, (m) => m.body.peers.some((p) => p.nodeId === echo.id), mark);
    expect(toAlpha.body.peers.find((p) => p.nodeId === echo.id)).toMatchObject({ publicKey: echo.publicKey, allowedIps: ['10.81.0.0/24', '192.168.50.0/24'], persistentKeepalive: 10 });
    expect(await confPeers(echo.id)).toEqual([alpha.publicKey]);

    // A pair exists once, whichever direction is asked for.
    for (const [from, to] of [
      [alpha.id, echo.id],
      [echo.id, alpha.id],
    ]) {
      const again = await s.job('link.create', { configId, fromNodeId: from, toNodeId: to });
      expect(again.state).toBe('failed');
      expect(again.error).toMatchObject({ code: 'CONFLICT', message: expect.stringContaining('already linked') });
    }
    const self = await s.job('link.create', { configId, fromNodeId: echo.id, toNodeId: echo.id });
    expect(self.error).toMatchObject({ code: 'INVALID' });
    expect((await repos().links.list(configId, {}, { limit: 100 })).items.filter((l) => l.linkGroupId === linkGroupId)).toHaveLength(2);

    // Removed by the reverse direction's id: both go, and alpha's next push no longer lists echo.
    mark = received.length;
    const deleted = await s.job('link.delete', { id: reverseId });
    expect(deleted.state, JSON.stringify(deleted.error)).toBe('completed');
    expect(deleted.result).toMatchObject({ id: reverseId, linkGroupId, deleted: 2 });
    expect((await repos().links.list(configId, {}, { limit: 100 })).items.filter((l) => l.linkGroupId === linkGroupId)).toEqual([]);
    await pushTo(alpha.id, (m) => !m.body.peers.some((p) => p.nodeId === echo.id), mark);
    expect(await confPeers(echo.id)).toEqual([]);
    const gone = await s.call({ method: 'POST', url: '/api/v1/jobs', payload: { type: 'link.delete', data: { id } } });
    expect(gone.statusCode).toBe(404);

    // A pair made by link.create is one mesh.generate skips: recreate one, then fill the rest.
    expect((await s.job('link.create', { configId, fromNodeId: echo.id, toNodeId: bravo.id })).state).toBe('completed');
    expect((await s.job('mesh.generate', { configId })).result).toEqual({ created: 3 });
    expect(await repos().links.countInConfig(configId)).toBe(5 * 4);
  });

  it('renders AmneziaWG parameters for an amneziawg config', async () => {
    const awg = { jc: 4, jmin: 40, jmax: 70, s1: 15, s2: 20, h1: 1001, h2: 1002, h3: 1003, h4: 1004 };
    const awgConfig = (await s.job('config.create', { name: 'awg', subnet: '10.82.0.0/24', protocol: 'amneziawg', awg })).result!.id as string;
    const a = (await s.job('node.create', { configId: awgConfig, name: 'a', kind: 'static' })).result!.id as string;
    const b = (await s.job('node.create', { configId: awgConfig, name: 'b', kind: 'static', endpoint: 'b.example.org:51820' })).result!.id as string;
    expect((await s.job('link.create', { configId: awgConfig, fromNodeId: a, toNodeId: b, persistentKeepalive: 0 })).state).toBe('completed');
    const res = await conf(a);
    expect(res.statusCode).toBe(200);
    const [iface, peer, ...rest] = parseWgIni(res.body);
    expect(rest).toEqual([]);
    expect(iface!.values).toMatchObject({ Jc: '4', Jmin: '40', Jmax: '70', S1: '15', S2: '20', H1: '1001', H2: '1002', H3: '1003', H4: '1004' });
    expect(peer!.values).toEqual({ PublicKey: (await node(b)).publicKey, Endpoint: 'b.example.org:51820', AllowedIPs: `${(await node(b)).address}/32` });
  });

  it('exports and restores agent-held nodes (no private key) and links made by link.create as they were', async () => {
    const nodesBefore = (await repos().nodes.list(configId, {}, { limit: 100 })).items;
    const linksBefore = (await repos().links.list(configId, {}, { limit: 500 })).items;
    const exported = await s.call({ method: 'POST', url: '/api/v1/snapshots/export?wait=30000' });
    expect(exported.statusCode, exported.body).toBe(200);
    const snapshotId = exported.json().result.snapshotId as string;
    const file = (await s.call({ method: 'GET', url: `/api/v1/snapshots/${snapshotId}/download` })).rawPayload;

    // Change what the snapshot holds, then restore it.
    expect((await s.job('node.delete', { id: bravo.id })).state).toBe('completed');
    const restored = await uploadSnapshot(s.api, s.auth, file, ADMIN_PASSWORD, '?wait=30000');
    expect(restored.statusCode, restored.body).toBe(200);
    expect(restored.json().state).toBe('completed');

    const strip = <T extends { updatedAt?: string; online?: boolean; lastSeenAt?: string | null }>(v: T) => ({ ...v, online: undefined, lastSeenAt: undefined });
    const nodesAfter = (await repos().nodes.list(configId, {}, { limit: 100 })).items;
    expect(nodesAfter.map(strip)).toEqual(nodesBefore.map(strip));
    expect((await repos().links.list(configId, {}, { limit: 500 })).items).toEqual(linksBefore);
    expect(await repos().nodes.privateKey(bravo.id)).toBeNull();
    expect(await repos().nodes.privateKey(delta.id)).toBeNull();
    expect(publicKeyFromPrivate((await repos().nodes.privateKey(alpha.id))!)).toBe(alpha.publicKey);
  });
});

describe.each(DIALECTS)('migrating to agent-held keys on %s', (dialect) => {
  it('makes private_key_enc optional and keeps every row that references a node (links, credential, forwards)', async () => {
    const db = await createTestDatabase(dialect, 'agent_keys_migration');
    const orm = await connectOrm(db.config());
    try {
      const at = MIGRATIONS.findIndex((m) => m.name === 'Migration20261201134800_agent_held_keys');
      await orm.migrator.up({ to: MIGRATIONS[at - 1]!.name });
      const conn = orm.em.getConnection();
      const ts = dialect === 'sqlite' ? Date.now() : new Date().toISOString();
      const [c, a, b] = [newId(), newId(), newId()];
      await conn.execute('insert into mesh_config (id, name, subnet, listen_port, dns, protocol, awg, created_at, updated_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?)', [c, 'm', '10.90.0.0/24', 51820, '[]', 'wireguard', null, ts, ts]);
      for (const [id, n] of [
        [a, 2],
        [b, 3],
      ] as const) {
        await conn.execute(
          'insert into node (id, config_id, name, kind, address, endpoint, listen_port, public_key, private_key_enc, client_initialized, online, last_seen_at, created_at, updated_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
          [id, c, `n${n}`, 'dynamic', `10.90.0.${n}`, null, null, generateKeyPair().publicKey, 'v1:sealed', false, false, null, ts, ts],
        );
      }
      const group = newId();
      for (const [from, to] of [
        [a, b],
        [b, a],
      ]) {
        await conn.execute('insert into peer_link (id, config_id, from_node_id, to_node_id, link_group_id, allowed_ips, persistent_keepalive) values (?, ?, ?, ?, ?, ?, ?)', [newId(), c, from, to, group, '["10.90.0.9/32"]', 25]);
      }
      await conn.execute('insert into mqtt_credential (id, node_id, username, client_id, password_hash, salt, version, rotated_at) values (?, ?, ?, ?, ?, ?, ?, ?)', [newId(), a, `node-${a}`, `node-${a}`, 'a'.repeat(64), 'b'.repeat(32), 1, ts]);
      await conn.execute('insert into port_forward_rule (id, config_id, from_node_id, from_port, to_node_id, to_port, protocol, enabled, created_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?)', [newId(), c, a, 80, b, 8080, 'tcp', true, ts]);

      await migrateUnderLock(orm, db.config());
      const count = async (table: string) => Number((await conn.execute(`select count(*) as n from ${table}`))[0]!.n);
      expect({ links: await count('peer_link'), credentials: await count('mqtt_credential'), forwards: await count('port_forward_rule'), nodes: await count('node') }).toEqual({
        links: 2,
        credentials: 1,
        forwards: 1,
        nodes: 2,
      });
      expect((await conn.execute('select private_key_enc from node where id = ?', [a]))[0]).toMatchObject({ private_key_enc: 'v1:sealed' });
      await conn.execute('update node set private_key_enc = null where id = ?', [b]);
      // The foreign keys still hold: deleting a node still takes its links and rules along.
      await conn.execute('delete from node where id = ?', [b]);
      expect({ links: await count('peer_link'), forwards: await count('port_forward_rule') }).toEqual({ links: 0, forwards: 0 });
    } finally {
      await orm.close(true);
      await db.drop();
    }
  });
});
