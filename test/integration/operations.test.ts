/**
 * Every operation job through the real runner (validation, one transaction, ledger) on
 * SQLite and PostgreSQL: its effect, its audit record, its result, and its domain
 * failures with their codes.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publicKeyFromPrivate } from '../../src/domain/keys.js';
import { hashMqttPassword, hashToken, newSalt } from '../../src/domain/secrets.js';
import type { JobType } from '../../src/jobs/table.js';
import { DIALECTS } from '../support/db.js';
import { createHarness, type Harness } from '../support/harness.js';

type Id = { id: string };

describe.each(DIALECTS)('operation jobs on %s', (dialect) => {
  let h: Harness;
  let seq = 0;
  /** Unique names and subnets per test: the tests share one database. */
  const unique = (prefix: string) => `${prefix}-${++seq}`;
  const subnet = () => `10.${100 + (++seq % 100)}.${seq % 250}.0/24`;

  beforeAll(async () => {
    h = await createHarness(dialect, 'ops');
  });
  afterAll(async () => {
    await h?.close();
  });

  const createConfig = async (extra: Record<string, unknown> = {}) => {
    const name = unique('cfg');
    const { id } = await h.run<Id>('config.create', { name, subnet: subnet(), ...extra });
    return { id, name };
  };
  const createNode = (configId: string, extra: Record<string, unknown> = {}) =>
    h.run<{ id: string; address: string }>('node.create', { configId, name: unique('n'), kind: 'static', ...extra });
  const auditOf = (entityId: string, action: string) =>
    h.read(async (r) => (await r.audit.list({ entityId, action }, { limit: 10 })).items);
  const brokerPending = () => h.read(async (r) => (await r.system.brokerSyncState()).pendingSeq);
  /** The error of a job that names a `what` nothing has. */
  const notFound = (what: string, id: string) => ({ code: 'NOT_FOUND', message: `${what} ${id} does not exist` });
  const itFailsForUnknown = (type: JobType, field: string, what: string) =>
    it(`fails with NOT_FOUND for an unknown ${what}`, async () => {
      const id = randomUUID();
      expect(await h.fail(type, { [field]: id })).toEqual(notFound(what, id));
    });

  describe('config.create', () => {
    it('creates a config with defaults and records who did it', async () => {
      const name = unique('home');
      const result = await h.run<Id>('config.create', { name, subnet: 'FD00:0::/64' }, { actor: 'alice' });
      expect(Object.keys(result)).toEqual(['id']);

      const config = await h.read((r) => r.configs.get(result.id));
      expect(config).toMatchObject({ name, subnet: 'fd00::/64', listenPort: 51820, dns: [], mtu: 1420, protocol: 'wireguard', awg: null });

      const audit = await auditOf(result.id, 'config.create');
      expect(audit).toHaveLength(1);
      expect(audit[0]).toMatchObject({ actor: 'alice', entityType: 'config', entityId: result.id, detail: { name } });
    });

    it('takes an MTU, changes it on update, and refuses one out of 1280-9000', async () => {
      const { id } = await createConfig({ mtu: 1380 });
      expect(await h.read((r) => r.configs.get(id))).toMatchObject({ mtu: 1380 });
      await h.run('config.update', { id, mtu: 9000 });
      expect(await h.read((r) => r.configs.get(id))).toMatchObject({ mtu: 9000 });
      await expect(h.run('config.create', { name: unique('m'), subnet: subnet(), mtu: 600 })).rejects.toThrow(/\[INVALID\].*mtu/);
    });

    it('stores AmneziaWG parameters with protocol amneziawg', async () => {
      const { id } = await createConfig({ protocol: 'amneziawg', awg: { jc: 4, jmin: 40, jmax: 70 }, dns: ['1.1.1.1'] });
      expect(await h.read((r) => r.configs.get(id))).toMatchObject({
        protocol: 'amneziawg',
        awg: { jc: 4, jmin: 40, jmax: 70 },
        dns: ['1.1.1.1'],
      });
    });

    it('refuses a duplicate name with CONFLICT naming it', async () => {
      const { name } = await createConfig();
      const err = await h.fail('config.create', { name, subnet: '10.1.0.0/24' });
      expect(err).toEqual({ code: 'CONFLICT', message: `a config named "${name}" already exists` });
    });

    it.each([
      ['a subnet that is not a CIDR', { subnet: '10.0.0.0' }, /subnet/],
      ['a subnet with host bits', { subnet: '10.0.0.1/24' }, /host bits/],
      ['a port out of range', { listenPort: 70000 }, /listenPort: 70000 is out of range/],
      ['an unknown protocol', { protocol: 'openvpn' }, /protocol/],
      ['awg parameters with protocol wireguard', { awg: { jc: 3 } }, /awg/],
      ['an unknown field', { colour: 'blue' }, /colour/],
    ])('refuses %s as INVALID at the payload', async (_what, extra, message) => {
      const err = await h.fail('config.create', { name: unique('bad'), subnet: '10.2.0.0/24', ...extra });
      expect(err.code).toBe('INVALID');
      expect(err.message).toMatch(message);
    });
  });

  describe('config.update', () => {
    it('changes the given fields only', async () => {
      const { id } = await createConfig();
      const before = (await h.read((r) => r.configs.get(id)))!;
      const name = unique('renamed');
      expect(await h.run('config.update', { id, name, listenPort: 51999, dns: ['9.9.9.9'] })).toEqual({ id });

      const after = await h.read((r) => r.configs.get(id));
      expect(after).toMatchObject({ name, listenPort: 51999, dns: ['9.9.9.9'], subnet: before.subnet });
      const [audit] = await auditOf(id, 'config.update');
      expect(audit!.detail).toEqual({ name, changed: ['dns', 'listenPort', 'name'] });
    });

    it('clears awg when switching to wireguard together with awg: null', async () => {
      const { id } = await createConfig({ protocol: 'amneziawg', awg: { jc: 2 } });
      const err = await h.fail('config.update', { id, protocol: 'wireguard' });
      expect(err.code).toBe('INVALID');
      expect(err.message).toMatch(/protocol is wireguard/);
      await h.run('config.update', { id, protocol: 'wireguard', awg: null });
      expect(await h.read((r) => r.configs.get(id))).toMatchObject({ protocol: 'wireguard', awg: null });
    });

    it('refuses a name another config has, an unknown id, the subnet and an empty update', async () => {
      const a = await createConfig();
      const b = await createConfig();
      expect(await h.fail('config.update', { id: b.id, name: a.name })).toEqual({
        code: 'CONFLICT',
        message: `a config named "${a.name}" already exists`,
      });
      const missing = randomUUID();
      expect(await h.fail('config.update', { id: missing, listenPort: 1000 })).toEqual(notFound('config', missing));
      expect((await h.fail('config.update', { id: a.id, subnet: '10.3.0.0/24' })).code).toBe('INVALID');
      expect((await h.fail('config.update', { id: a.id })).code).toBe('INVALID');
    });
  });

  describe('config.delete', () => {
    it('removes the config with its nodes, links, forwards and credentials, and marks the broker sync', async () => {
      const { id, name } = await createConfig();
      const a = await createNode(id, { kind: 'dynamic' });
      const b = await createNode(id);
      await createNode(id);
      await h.run('mesh.generate', { configId: id });
      await h.run('port-forward.create', { configId: id, fromNodeId: a.id, fromPort: 80, toNodeId: b.id, toPort: 8080, protocol: 'tcp' });
      const pending = await brokerPending();

      expect(await h.run('config.delete', { id })).toEqual({ id });

      const left = await h.read(async (r) => ({
        config: await r.configs.get(id),
        nodes: await r.nodes.countInConfig(id),
        links: await r.links.countInConfig(id),
        forwards: await r.forwards.countInConfig(id),
        credential: await r.credentials.forNode(a.id),
      }));
      expect(left).toEqual({ config: undefined, nodes: 0, links: 0, forwards: 0, credential: undefined });
      expect(await brokerPending()).toBe(pending + 1);
      const [audit] = await auditOf(id, 'config.delete');
      expect(audit!.detail).toEqual({ name, nodes: 3, credentials: 1 });
    });

    it('does not mark the broker sync when no credential went with the config', async () => {
      const { id } = await createConfig();
      await createNode(id);
      const pending = await brokerPending();
      await h.run('config.delete', { id });
      expect(await brokerPending()).toBe(pending);
    });

    itFailsForUnknown('config.delete', 'id', 'config');
  });

  describe('node.create', () => {
    it('allocates the lowest free address and stores the private key encrypted', async () => {
      const { id: configId } = await h.run<Id>('config.create', { name: unique('alloc'), subnet: '10.77.0.0/24' });
      const first = await createNode(configId);
      const chosen = await createNode(configId, { address: '10.77.0.3' });
      const second = await createNode(configId);
      const third = await createNode(configId);
      expect([first.address, chosen.address, second.address, third.address]).toEqual([
        '10.77.0.1',
        '10.77.0.3',
        '10.77.0.2',
        '10.77.0.4',
      ]);

      const { view, privateKey } = await h.read(async (r) => ({
        view: await r.nodes.get(first.id),
        privateKey: await r.nodes.privateKey(first.id),
      }));
      expect(view).toMatchObject({ id: first.id, configId, kind: 'static', address: '10.77.0.1', online: false });
      expect(Object.keys(view!)).not.toContain('privateKeyEnc');
      expect(JSON.stringify(view)).not.toContain(privateKey);
      expect(publicKeyFromPrivate(privateKey!)).toBe(view!.publicKey);
      expect(await h.read((r) => r.credentials.forNode(first.id))).toBeUndefined();

      const [audit] = await auditOf(first.id, 'node.create');
      expect(audit).toMatchObject({ entityType: 'node', detail: { configId, address: '10.77.0.1', kind: 'static' } });
      expect(JSON.stringify(audit)).not.toContain(privateKey);
    });

    it('gives a dynamic node an MQTT credential and marks the broker sync', async () => {
      const { id: configId } = await createConfig();
      const pending = await brokerPending();
      const { id } = await createNode(configId, { kind: 'dynamic', endpoint: 'vpn.example.com:51820', listenPort: 51821 });

      const credential = await h.read((r) => r.credentials.forNode(id));
      expect(credential).toEqual({ username: `node-${id}`, clientId: `node-${id}`, version: 1, rotatedAt: expect.any(String) });
      expect(await h.read((r) => r.nodes.get(id))).toMatchObject({ endpoint: 'vpn.example.com:51820', listenPort: 51821 });
      expect(await brokerPending()).toBe(pending + 1);
      const broker = await h.read((r) => r.credentials.brokerCredentials());
      expect(broker.find((c) => c.nodeId === id)).toMatchObject({ configId, username: `node-${id}`, version: 1 });
    });

    it('allocates in an IPv6 subnet and stores addresses canonical', async () => {
      const { id: configId } = await h.run<Id>('config.create', { name: unique('v6'), subnet: 'fd10::/64' });
      expect((await createNode(configId)).address).toBe('fd10::1');
      expect((await createNode(configId, { address: 'FD10:0:0::00AB' })).address).toBe('fd10::ab');
    });

    it('refuses an address outside the subnet or reserved (INVALID) and one in use (CONFLICT naming the node)', async () => {
      const { id: configId, name } = await h.run<Id>('config.create', { name: unique('addr'), subnet: '10.78.0.0/24' }).then(
        async (r) => ({ id: r.id, name: (await h.read((x) => x.configs.get(r.id)))!.name }),
      );
      const outside = await h.fail('node.create', { configId, name: unique('n'), kind: 'static', address: '10.79.0.5' });
      expect(outside.code).toBe('INVALID');
      expect(outside.message).toMatch(/address 10\.79\.0\.5 is outside subnet 10\.78\.0\.0\/24/);
      const broadcast = await h.fail('node.create', { configId, name: unique('n'), kind: 'static', address: '10.78.0.255' });
      expect(broadcast.code).toBe('INVALID');

      await h.run('node.create', { configId, name: 'gw', kind: 'static', address: '10.78.0.9' });
      expect(await h.fail('node.create', { configId, name: unique('n'), kind: 'static', address: '10.78.0.9' })).toEqual({
        code: 'CONFLICT',
        message: `address 10.78.0.9 is already used by node "gw" in config "${name}"`,
      });
      expect(await h.fail('node.create', { configId, name: 'gw', kind: 'static' })).toEqual({
        code: 'CONFLICT',
        message: `a node named "gw" already exists in config "${name}"`,
      });
    });

    it('reports a full subnet as CONFLICT', async () => {
      const { id: configId } = await h.run<Id>('config.create', { name: unique('tiny'), subnet: '10.79.1.0/30' });
      await createNode(configId);
      await createNode(configId);
      const err = await h.fail('node.create', { configId, name: unique('n'), kind: 'static' });
      expect(err.code).toBe('CONFLICT');
      expect(err.message).toMatch(/has no free address/);
    });

    it('refuses an unknown config (NOT_FOUND) and bad fields (INVALID)', async () => {
      const missing = randomUUID();
      expect(await h.fail('node.create', { configId: missing, name: 'x', kind: 'static' })).toEqual(notFound('config', missing));
      const { id: configId } = await createConfig();
      for (const bad of [{ kind: 'roaming' }, { listenPort: 0 }, { endpoint: 'no-port' }, { address: 'not-an-ip' }, { secret: 1 }]) {
        const err = await h.fail('node.create', { configId, name: unique('n'), kind: 'static', ...bad });
        expect(err.code, JSON.stringify(bad)).toBe('INVALID');
      }
    });
  });

  describe('node.update', () => {
    it('renames, sets and clears the endpoint, changes the listen port', async () => {
      const { id: configId } = await createConfig();
      const { id } = await createNode(configId, { endpoint: 'a.example.com:1000' });
      const name = unique('new');
      expect(await h.run('node.update', { id, name, listenPort: 4000 })).toEqual({ id });
      expect(await h.read((r) => r.nodes.get(id))).toMatchObject({ name, listenPort: 4000, endpoint: 'a.example.com:1000' });
      await h.run('node.update', { id, endpoint: null });
      expect((await h.read((r) => r.nodes.get(id)))!.endpoint).toBeNull();
      const audits = await auditOf(id, 'node.update');
      expect(audits).toHaveLength(2);
      expect(audits[0]!.detail).toMatchObject({ configId, changes: { endpoint: null } });
    });

    it('refuses a name taken in the config, an unknown node and an empty update', async () => {
      const { id: configId, name: configName } = await createConfig();
      const a = await createNode(configId);
      const b = await createNode(configId);
      const aName = (await h.read((r) => r.nodes.get(a.id)))!.name;
      expect(await h.fail('node.update', { id: b.id, name: aName })).toEqual({
        code: 'CONFLICT',
        message: `a node named "${aName}" already exists in config "${configName}"`,
      });
      const missing = randomUUID();
      expect(await h.fail('node.update', { id: missing, listenPort: 1 })).toEqual(notFound('node', missing));
      expect((await h.fail('node.update', { id: a.id })).code).toBe('INVALID');
      expect((await h.fail('node.update', { id: a.id, listenPort: 65536 })).code).toBe('INVALID');
    });
  });

  describe('node.delete', () => {
    it('removes the node with its links, forwards and credential', async () => {
      const { id: configId } = await createConfig();
      const a = await createNode(configId, { kind: 'dynamic' });
      const b = await createNode(configId);
      const c = await createNode(configId);
      await h.run('mesh.generate', { configId });
      await h.run('port-forward.create', { configId, fromNodeId: b.id, fromPort: 22, toNodeId: a.id, toPort: 22, protocol: 'tcp' });
      const pending = await brokerPending();

      expect(await h.run('node.delete', { id: a.id })).toEqual({ id: a.id });

      const left = await h.read(async (r) => ({
        node: await r.nodes.get(a.id),
        links: (await r.links.list(configId, {}, { limit: 100 })).items,
        forwards: await r.forwards.countInConfig(configId),
        credential: await r.credentials.forNode(a.id),
      }));
      expect(left.node).toBeUndefined();
      expect(left.links.map((l) => [l.fromNodeId, l.toNodeId]).sort()).toEqual([[b.id, c.id], [c.id, b.id]].sort());
      expect(left.forwards).toBe(0);
      expect(left.credential).toBeUndefined();
      expect(await brokerPending()).toBe(pending + 1);
      expect(await auditOf(a.id, 'node.delete')).toHaveLength(1);
    });

    itFailsForUnknown('node.delete', 'id', 'node');
  });

  describe('node.rotate-credentials', () => {
    it('stores the new hash and salt, bumps the version and marks the broker sync', async () => {
      const { id: configId } = await createConfig();
      const { id: nodeId } = await createNode(configId, { kind: 'dynamic' });
      const before = (await h.read((r) => r.credentials.forNode(nodeId)))!;
      const salt = newSalt();
      const passwordHash = hashMqttPassword('correct horse', salt);
      const pending = await brokerPending();

      const result = await h.run('node.rotate-credentials', { nodeId, passwordHash, salt });
      expect(result).toEqual({ nodeId, username: `node-${nodeId}`, version: 2 });

      const after = (await h.read((r) => r.credentials.forNode(nodeId)))!;
      expect(after.version).toBe(2);
      expect(Date.parse(after.rotatedAt)).toBeGreaterThanOrEqual(Date.parse(before.rotatedAt));
      expect(Object.keys(after).sort()).toEqual(['clientId', 'rotatedAt', 'username', 'version']);
      const stored = (await h.read((r) => r.credentials.brokerCredentials())).find((c) => c.nodeId === nodeId);
      expect(stored).toMatchObject({ passwordHash, salt, version: 2 });
      expect(await brokerPending()).toBe(pending + 1);

      const [audit] = await auditOf(nodeId, 'node.rotate-credentials');
      expect(audit!.detail).toMatchObject({ username: `node-${nodeId}`, version: 2 });
      expect(JSON.stringify(audit)).not.toContain(passwordHash);
      expect(JSON.stringify(audit)).not.toContain(salt);
    });

    it('refuses a static node (INVALID), an unknown node (NOT_FOUND) and a malformed hash (INVALID)', async () => {
      const { id: configId } = await createConfig();
      const { id: nodeId } = await createNode(configId);
      const salt = newSalt();
      const passwordHash = hashMqttPassword('x', salt);
      const err = await h.fail('node.rotate-credentials', { nodeId, passwordHash, salt });
      expect(err.code).toBe('INVALID');
      expect(err.message).toMatch(new RegExp(`${nodeId}\\) is static; only dynamic nodes have MQTT credentials`));
      const missing = randomUUID();
      expect(await h.fail('node.rotate-credentials', { nodeId: missing, passwordHash, salt })).toEqual(notFound('node', missing));
      expect((await h.fail('node.rotate-credentials', { nodeId, passwordHash: 'plaintext', salt })).code).toBe('INVALID');
      expect((await h.fail('node.rotate-credentials', { nodeId, passwordHash, salt, password: 'x' })).code).toBe('INVALID');
    });
  });

  describe('node.presence', () => {
    it('records online state and last seen, ignoring events older than the recorded one, auditing only changes of state', async () => {
      const { id: configId } = await createConfig();
      const { id: nodeId } = await createNode(configId, { kind: 'dynamic' });
      const t1 = '2030-01-01T10:00:00.000Z';
      const t0 = '2030-01-01T09:00:00.000Z';
      const t2 = '2030-01-01T11:00:00.000Z';

      expect(await h.run('node.presence', { nodeId, online: true, at: t1 })).toEqual({ nodeId, online: true });
      expect(await h.read((r) => r.nodes.get(nodeId))).toMatchObject({ online: true, lastSeenAt: t1 });

      // a late "offline" from before the "online": stale, not applied
      expect(await h.run('node.presence', { nodeId, online: false, at: t0 })).toEqual({ nodeId, online: true });
      expect(await h.read((r) => r.nodes.get(nodeId))).toMatchObject({ online: true, lastSeenAt: t1 });

      expect(await h.run('node.presence', { nodeId, online: false, at: t2 })).toEqual({ nodeId, online: false });
      expect(await h.read((r) => r.nodes.get(nodeId))).toMatchObject({ online: false, lastSeenAt: t2 });

      // Newest first; the stale event changed nothing, so it left no audit row.
      const audits = await auditOf(nodeId, 'node.presence');
      expect(audits.map((a) => a.detail.online)).toEqual([false, true]);
    });

    it('fails with NOT_FOUND for an unknown node and INVALID for a bad time', async () => {
      const nodeId = randomUUID();
      expect(await h.fail('node.presence', { nodeId, online: true, at: new Date().toISOString() })).toEqual(notFound('node', nodeId));
      expect((await h.fail('node.presence', { nodeId, online: true, at: 'yesterday' })).code).toBe('INVALID');
    });
  });

  describe('mesh.generate', () => {
    it('links every pair once in both directions, then creates nothing on a second run', async () => {
      const { id: configId } = await createConfig();
      const nodes: { id: string; address: string }[] = [];
      for (let i = 0; i < 4; i++) nodes.push(await createNode(configId));

      expect(await h.run('mesh.generate', { configId })).toEqual({ created: 6 });
      const links = (await h.read((r) => r.links.list(configId, {}, { limit: 100 }))).items;
      expect(links).toHaveLength(12);
      const addressOf = new Map(nodes.map((n) => [n.id, n.address]));
      for (const link of links) {
        expect(link.allowedIps).toEqual([`${addressOf.get(link.toNodeId)}/32`]);
        expect(link.persistentKeepalive).toBe(25);
        const reverse = links.find((l) => l.fromNodeId === link.toNodeId && l.toNodeId === link.fromNodeId);
        expect(reverse?.linkGroupId).toBe(link.linkGroupId);
      }
      expect(new Set(links.map((l) => l.linkGroupId)).size).toBe(6);
      const [audit] = await auditOf(configId, 'mesh.generate');
      expect(audit!.detail).toMatchObject({ nodes: 4, created: 6 });

      expect(await h.run('mesh.generate', { configId })).toEqual({ created: 0 });
      expect(await h.read((r) => r.links.countInConfig(configId))).toBe(12);

      await createNode(configId);
      expect(await h.run('mesh.generate', { configId, persistentKeepalive: null })).toEqual({ created: 4 });
      const newLinks = (await h.read((r) => r.links.list(configId, {}, { limit: 100 }))).items.filter(
        (l) => l.persistentKeepalive === null,
      );
      expect(newLinks).toHaveLength(8);
    });

    it('routes /128 host addresses in an IPv6 config', async () => {
      const { id: configId } = await h.run<Id>('config.create', { name: unique('v6mesh'), subnet: 'fd20::/64' });
      await createNode(configId);
      await createNode(configId);
      await h.run('mesh.generate', { configId });
      const links = (await h.read((r) => r.links.list(configId))).items;
      expect(links.flatMap((l) => l.allowedIps).sort()).toEqual(['fd20::1/128', 'fd20::2/128']);
    });

    itFailsForUnknown('mesh.generate', 'configId', 'config');
  });

  describe('port-forward.create and port-forward.delete', () => {
    it('creates a rule and deletes it', async () => {
      const { id: configId } = await createConfig();
      const a = await createNode(configId);
      const b = await createNode(configId);
      const rule = { configId, fromNodeId: a.id, fromPort: 8443, toNodeId: b.id, toPort: 443, protocol: 'tcp' };
      const { id } = await h.run<Id>('port-forward.create', rule);
      expect(await h.read((r) => r.forwards.get(id))).toMatchObject({ ...rule, enabled: true });
      expect(await auditOf(id, 'port-forward.create')).toHaveLength(1);
      // the same port with the other protocol is another target
      await h.run('port-forward.create', { ...rule, protocol: 'udp' });

      expect(await h.run('port-forward.delete', { id })).toEqual({ id });
      expect(await h.read((r) => r.forwards.get(id))).toBeUndefined();
      expect(await auditOf(id, 'port-forward.delete')).toHaveLength(1);
      expect(await h.fail('port-forward.delete', { id })).toEqual(notFound('port-forward rule', id));
    });

    it('refuses a taken target (CONFLICT), the same node twice (INVALID), nodes outside the config (NOT_FOUND)', async () => {
      const { id: configId, name } = await createConfig();
      const a = await createNode(configId);
      const b = await createNode(configId, { name: 'web' });
      const rule = { configId, fromNodeId: a.id, fromPort: 80, toNodeId: b.id, toPort: 8080, protocol: 'tcp' };
      const { id } = await h.run<Id>('port-forward.create', rule);
      expect(await h.fail('port-forward.create', { ...rule, fromPort: 81 })).toEqual({
        code: 'CONFLICT',
        message: `port 8080/tcp on node "web" in config "${name}" is already the target of rule ${id}`,
      });
      expect((await h.fail('port-forward.create', { ...rule, toNodeId: a.id })).code).toBe('INVALID');

      const other = await createConfig();
      const stranger = await createNode(other.id);
      expect(await h.fail('port-forward.create', { ...rule, toNodeId: stranger.id })).toEqual({
        code: 'NOT_FOUND',
        message: `node ${stranger.id} is not in config "${name}"`,
      });
      const missing = randomUUID();
      expect(await h.fail('port-forward.create', { ...rule, fromNodeId: missing })).toEqual(notFound('node', missing));
      expect((await h.fail('port-forward.create', { ...rule, configId: missing })).code).toBe('NOT_FOUND');
      expect((await h.fail('port-forward.create', { ...rule, protocol: 'sctp' })).code).toBe('INVALID');
      expect((await h.fail('port-forward.create', { ...rule, toPort: 0 })).code).toBe('INVALID');
    });
  });

  describe('settings.update', () => {
    it('sets JSON values by key, removes keys set to null, and audits keys without values', async () => {
      const k = unique('ui');
      const result = await h.run('settings.update', {
        values: { [`${k}.theme`]: 'dark', [`${k}.limits`]: { max: 3, tags: ['a'] }, [`${k}.webhook`]: 'https://x/?token=s3cr3t' },
      });
      expect(result).toEqual({ keys: [`${k}.limits`, `${k}.theme`, `${k}.webhook`] });
      expect((await h.read((r) => r.settings.get(`${k}.limits`)))?.value).toEqual({ max: 3, tags: ['a'] });

      await h.run('settings.update', { values: { [`${k}.theme`]: 'light', [`${k}.webhook`]: null } });
      const all = await h.read((r) => r.settings.list({ limit: 500 }));
      const mine = all.items.filter((s) => s.key.startsWith(`${k}.`));
      expect(mine.map((s) => [s.key, s.value])).toEqual([
        [`${k}.limits`, { max: 3, tags: ['a'] }],
        [`${k}.theme`, 'light'],
      ]);

      const audits = (await h.read((r) => r.audit.list({ action: 'settings.update' }, { limit: 50 }))).items;
      expect(JSON.stringify(audits)).not.toContain('s3cr3t');
      expect(audits[0]).toMatchObject({ entityType: 'setting', entityId: null, detail: { removed: [`${k}.webhook`] } });
    });

    it('refuses bad keys, no keys and more than 100 keys (INVALID)', async () => {
      expect((await h.fail('settings.update', { values: { 'has space': 1 } })).code).toBe('INVALID');
      expect((await h.fail('settings.update', { values: {} })).code).toBe('INVALID');
      const many = Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`k${i}`, i]));
      expect((await h.fail('settings.update', { values: many })).code).toBe('INVALID');
    });
  });

  describe('token.create and token.revoke', () => {
    it('stores a token by its hash, shows it without the hash, and revokes it', async () => {
      const id = randomUUID();
      const tokenHash = hashToken(`token-${id}`);
      expect(await h.run('token.create', { id, name: 'ci', tokenHash })).toEqual({ id });

      const view = await h.read((r) => r.tokens.get(id));
      // Least privilege: a token gets `read` unless it asks for more.
      expect(view).toEqual({ id, name: 'ci', scopes: ['read'], createdAt: expect.any(String), lastUsedAt: null, expiresAt: null });
      expect(await h.read((r) => r.tokens.findByHash(tokenHash))).toEqual({ id, name: 'ci', scopes: ['read'], expiresAt: null });
      const [audit] = await auditOf(id, 'token.create');
      expect(JSON.stringify(audit)).not.toContain(tokenHash);

      expect(await h.fail('token.create', { id, name: 'again', tokenHash: hashToken('other') })).toEqual({
        code: 'CONFLICT',
        message: `API token ${id} already exists`,
      });

      expect(await h.run('token.revoke', { id })).toEqual({ id });
      expect(await h.read((r) => r.tokens.findByHash(tokenHash))).toBeUndefined();
      expect(await auditOf(id, 'token.revoke')).toHaveLength(1);
      expect(await h.fail('token.revoke', { id })).toEqual(notFound('API token', id));
    });

    it('refuses a plaintext token where a hash belongs (INVALID)', async () => {
      expect((await h.fail('token.create', { id: randomUUID(), name: 'x', tokenHash: 'mq_plaintext' })).code).toBe('INVALID');
      expect((await h.fail('token.create', { id: randomUUID(), name: 'x', tokenHash: hashToken('t'), token: 't' })).code).toBe('INVALID');
    });
  });

  describe('concurrency', () => {
    it('parallel node.create jobs in one config all succeed with distinct addresses and count every broker mark', async () => {
      const { id: configId } = await createConfig();
      const pending = await brokerPending();
      const results = await Promise.all(
        Array.from({ length: 12 }, (_, i) => h.run<{ id: string; address: string }>('node.create', { configId, name: `p${i}`, kind: 'dynamic' })),
      );
      expect(new Set(results.map((r) => r.address)).size).toBe(12);
      expect(await brokerPending()).toBe(pending + 12);
    });

    it('parallel mesh.generate jobs of one config create each pair once', async () => {
      const { id: configId } = await createConfig();
      for (let i = 0; i < 30; i++) await createNode(configId);
      const results = await Promise.all([1, 2, 3].map(() => h.run<{ created: number }>('mesh.generate', { configId })));
      expect(results.map((r) => r.created).sort((a, b) => a - b)).toEqual([0, 0, 435]);
      expect(await h.read((r) => r.links.countInConfig(configId))).toBe(870);
    });
  });

  describe('exactly once', () => {
    it('a job re-run with the same id returns the recorded result and applies nothing twice', async () => {
      const jobId = randomUUID();
      const name = unique('once');
      const first = await h.run<Id>('config.create', { name, subnet: '10.5.0.0/24' }, { jobId });
      const second = await h.run<Id>('config.create', { name, subnet: '10.5.0.0/24' }, { jobId });
      expect(second).toEqual(first);
      expect((await h.read((r) => r.configs.list({ name }))).items).toHaveLength(1);
      expect(await auditOf(first.id, 'config.create')).toHaveLength(1);
    });

    it('a failed job changes nothing, not even its audit record', async () => {
      const { id: configId } = await createConfig();
      await createNode(configId, { name: 'dup' });
      const before = (await h.read((r) => r.audit.list({ action: 'node.create' }, { limit: 500 }))).items.length;
      await h.fail('node.create', { configId, name: 'dup', kind: 'dynamic' });
      expect((await h.read((r) => r.audit.list({ action: 'node.create' }, { limit: 500 }))).items.length).toBe(before);
      expect(await h.read((r) => r.nodes.countInConfig(configId))).toBe(1);
    });
  });

  describe('reads', () => {
    it('pages configs by cursor in creation order', async () => {
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push((await createConfig()).id);
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const page: { items: { id: string }[]; next: string | null } = await h.read((r) => r.configs.list({}, { limit: 2, cursor }));
        expect(page.items.length).toBeLessThanOrEqual(2);
        seen.push(...page.items.map((c) => c.id));
        cursor = page.next;
      } while (cursor);
      expect(seen.filter((id) => ids.includes(id))).toEqual(ids);
      expect(seen).toEqual([...seen].sort());
    });

    it('lists the audit log newest first and refuses a malformed cursor', async () => {
      const page = await h.read((r) => r.audit.list({}, { limit: 3 }));
      expect(page.items).toHaveLength(3);
      expect(page.items.map((a) => a.id)).toEqual([...page.items.map((a) => a.id)].sort().reverse());
      const next = await h.read((r) => r.audit.list({}, { limit: 3, cursor: page.next }));
      expect(next.items[0]!.id < page.items[2]!.id).toBe(true);
      await expect(h.read((r) => r.nodes.list(randomUUID(), {}, { cursor: "x' or 1=1" }))).rejects.toMatchObject({ code: 'INVALID' });
    });
  });
});
