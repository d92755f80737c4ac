/**
 * Every read and write of the mesh tables. Processors call these methods and never see
 * the EntityManager. Writes that concern one row go through the unit of work (flushed
 * with the job's commit); bulk and conditional writes are single native statements.
 */
import { LockMode, type FilterQuery } from '@mikro-orm/core';
import type { Em } from '../db/orm.js';
import { boundSql, type SqlValue } from '../db/sql.js';
import { DomainError, NotFoundError } from '../domain/errors.js';
import { newId } from '../domain/ids.js';
import { idCursor, pageLimit, toPage, type Page, type PageRequest } from '../domain/paging.js';
import { decryptSecret, encryptSecret } from '../domain/secrets.js';
import { canonicalAddress, canonicalCidr } from '../domain/cidr.js';
import { MeshConfig, MqttCredential, Node, PeerLink, PortForwardRule } from '../domain/entities/mesh.js';
import { pairKeysOfLinks } from '../domain/pairs.js';
import type { AwgParams, ForwardProtocol, NodeKind, TunnelProtocol } from '../domain/validation.js';

const iso = (d: Date | null | undefined): string | null => d?.toISOString() ?? null;

/* ------------------------------------------------------------------ configs */

export interface ConfigFields {
  name: string;
  subnet: string;
  listenPort: number;
  dns: string[];
  mtu: number;
  protocol: TunnelProtocol;
  awg?: AwgParams | null;
}

export type ConfigPatch = Partial<Omit<ConfigFields, 'subnet'>>;

export interface ConfigView extends Required<Omit<ConfigFields, 'awg'>> {
  id: string;
  awg: AwgParams | null;
  createdAt: string;
  updatedAt: string;
}

export const configView = (c: MeshConfig): ConfigView => ({
  id: c.id,
  name: c.name,
  subnet: c.subnet,
  listenPort: c.listenPort,
  dns: c.dns,
  mtu: c.mtu,
  protocol: c.protocol as TunnelProtocol,
  awg: c.awg ?? null,
  createdAt: c.createdAt.toISOString(),
  updatedAt: c.updatedAt.toISOString(),
});

export class ConfigRepository {
  constructor(private readonly em: Em) {}

  async get(id: string): Promise<ConfigView | undefined> {
    const row = await this.em.findOne(MeshConfig, { id });
    return row ? configView(row) : undefined;
  }

  async require(id: string): Promise<ConfigView> {
    const row = await this.em.findOne(MeshConfig, { id });
    if (!row) throw new NotFoundError('config', id);
    return configView(row);
  }

  /**
   * Locks the config row for the rest of the transaction (PostgreSQL; SQLite writers are
   * serialized already). Jobs that derive new rows from the config's current contents
   * (lowest free address, missing pairs, a free forward target) take it, so parallel
   * workers queue up per config instead of colliding on a unique constraint.
   */
  async requireForUpdate(id: string): Promise<ConfigView> {
    const row = await this.em.findOne(MeshConfig, { id }, { lockMode: LockMode.PESSIMISTIC_WRITE, refresh: true });
    if (!row) throw new NotFoundError('config', id);
    return configView(row);
  }

  async findByName(name: string): Promise<ConfigView | undefined> {
    const row = await this.em.findOne(MeshConfig, { name });
    return row ? configView(row) : undefined;
  }

  /** Stores addresses canonical, so equal addresses are equal strings. */
  create(fields: ConfigFields): string {
    const id = newId();
    const now = new Date();
    this.em.create(MeshConfig, {
      id,
      ...fields,
      subnet: canonicalCidr(fields.subnet, 'subnet'),
      dns: fields.dns.map((d) => canonicalAddress(d, 'dns')),
      awg: fields.awg ?? null,
      createdAt: now,
      updatedAt: now,
    });
    return id;
  }

  async update(id: string, patch: ConfigPatch): Promise<void> {
    const row = await this.em.findOneOrFail(MeshConfig, { id });
    const dns = patch.dns?.map((d) => canonicalAddress(d, 'dns'));
    this.em.assign(row, { ...patch, ...(dns ? { dns } : {}) });
  }

  /** One statement: nodes, links, forwards and credentials go with it by ON DELETE CASCADE. */
  async delete(id: string): Promise<void> {
    await this.em.nativeDelete(MeshConfig, { id });
  }

  async list(filter: { name?: string } = {}, req: PageRequest = {}): Promise<Page<ConfigView>> {
    const limit = pageLimit(req);
    const cursor = idCursor(req);
    const where: FilterQuery<MeshConfig> = { ...filter, ...(cursor ? { id: { $gt: cursor } } : {}) };
    const rows = await this.em.find(MeshConfig, where, { orderBy: { id: 'asc' }, limit: limit + 1 });
    return toPage(rows, limit, (r) => r.id, configView);
  }
}

/* -------------------------------------------------------------------- nodes */

export interface NewNode {
  configId: string;
  name: string;
  kind: NodeKind;
  address: string;
  endpoint?: string | null;
  listenPort?: number | null;
  publicKey: string;
  /** Plaintext private key: encrypted here with the server key, never stored as is. */
  privateKey: string;
}

export interface NodePatch {
  name?: string;
  endpoint?: string | null;
  listenPort?: number | null;
}

/** The columns behind NodePatch, in a fixed order (a constant statement text per combination). */
const NODE_PATCH_COLUMNS: readonly (readonly [keyof NodePatch, string])[] = [
  ['name', 'name'],
  ['endpoint', 'endpoint'],
  ['listenPort', 'listen_port'],
];

/** A node as processors and the API see it: no private key, encrypted or not. */
export interface NodeView {
  id: string;
  configId: string;
  name: string;
  kind: NodeKind;
  address: string;
  endpoint: string | null;
  listenPort: number | null;
  publicKey: string;
  clientInitialized: boolean;
  online: boolean;
  lastSeenAt: string | null;
  createdAt: string;
  updatedAt: string;
}

export const nodeView = (n: Node): NodeView => ({
  id: n.id,
  configId: n.config,
  name: n.name,
  kind: n.kind as NodeKind,
  address: n.address,
  endpoint: n.endpoint ?? null,
  listenPort: n.listenPort ?? null,
  publicKey: n.publicKey,
  clientInitialized: n.clientInitialized,
  online: n.online,
  lastSeenAt: iso(n.lastSeenAt),
  createdAt: n.createdAt.toISOString(),
  updatedAt: n.updatedAt.toISOString(),
});

export interface NodeFilter {
  kind?: NodeKind;
  online?: boolean;
}

export class NodeRepository {
  constructor(
    private readonly em: Em,
    private readonly serverKey: Buffer,
  ) {}

  async get(id: string): Promise<NodeView | undefined> {
    const row = await this.em.findOne(Node, { id });
    return row ? nodeView(row) : undefined;
  }

  /** Which of these node ids exist: one bound query (the API's batched probe of submitted ids). */
  async existing(ids: readonly string[]): Promise<Set<string>> {
    const { rows } = await boundSql(this.em).query<{ id: string }>(`select id from node where id in (${ids.map(() => '?').join(', ')})`, ids);
    return new Set(rows.map((r) => r.id));
  }

  /**
   * Views are plain objects, so the row need not be managed: outside the identity map it
   * costs the flush nothing (node.update, the hottest job, reads the node through here).
   */
  async require(id: string): Promise<NodeView> {
    const row = await this.em.findOne(Node, { id }, { disableIdentityMap: true });
    if (!row) throw new NotFoundError('node', id);
    return nodeView(row);
  }

  /** A node that must belong to the given config (a rule or link never spans configs). */
  async requireInConfig(config: { id: string; name: string }, nodeId: string): Promise<NodeView> {
    const row = await this.em.findOne(Node, { id: nodeId });
    if (!row) throw new NotFoundError('node', nodeId);
    if (row.config !== config.id) {
      throw new DomainError('NOT_FOUND', `node ${nodeId} is not in config "${config.name}"`, {
        entity: 'node',
        id: nodeId,
        configId: config.id,
      });
    }
    return nodeView(row);
  }

  async findByName(configId: string, name: string): Promise<NodeView | undefined> {
    const row = await this.em.findOne(Node, { config: configId, name });
    return row ? nodeView(row) : undefined;
  }

  async findByAddress(configId: string, address: string): Promise<NodeView | undefined> {
    const row = await this.em.findOne(Node, { config: configId, address: canonicalAddress(address, 'address') });
    return row ? nodeView(row) : undefined;
  }

  /** Addresses in use in a config: the input of address allocation. */
  async takenAddresses(configId: string): Promise<string[]> {
    const rows = await this.em
      .createQueryBuilder(Node)
      .select(['address'])
      .where({ config: configId })
      .execute<{ address: string }[]>('all');
    return rows.map((r) => r.address);
  }

  /** Id and address of every node of a config, ordered by id: the input of pair generation. */
  async meshMembers(configId: string): Promise<{ id: string; address: string }[]> {
    return this.em
      .createQueryBuilder(Node)
      .select(['id', 'address'])
      .where({ config: configId })
      .orderBy({ id: 'asc' })
      .execute<{ id: string; address: string }[]>('all');
  }

  create(node: NewNode): string {
    const id = newId();
    const { privateKey, configId, ...rest } = node;
    const now = new Date();
    this.em.create(Node, {
      id,
      ...rest,
      address: canonicalAddress(node.address, 'address'),
      config: configId,
      endpoint: node.endpoint ?? null,
      listenPort: node.listenPort ?? null,
      privateKeyEnc: encryptSecret(privateKey, this.serverKey),
      clientInitialized: false,
      online: false,
      lastSeenAt: null,
      createdAt: now,
      updatedAt: now,
    });
    return id;
  }

  /** The node's WireGuard private key, decrypted (config push only; never logged or returned by the API). */
  async privateKey(id: string): Promise<string> {
    const row = await this.em.findOne(Node, { id }, { fields: ['privateKeyEnc'] });
    if (!row) throw new NotFoundError('node', id);
    return decryptSecret(row.privateKeyEnc, this.serverKey);
  }

  /**
   * One bound UPDATE … RETURNING, without loading the entity: node.update is the hottest
   * job, and this is its only statement besides the job's closing write. Returns the
   * node's config and (new) name, or undefined when there is no such node.
   */
  async update(id: string, patch: NodePatch): Promise<{ configId: string; name: string } | undefined> {
    const sets: string[] = [];
    const values: SqlValue[] = [];
    for (const [field, column] of NODE_PATCH_COLUMNS) {
      const value = patch[field];
      if (value === undefined) continue;
      sets.push(`${column} = ?`);
      values.push(value);
    }
    sets.push('updated_at = ?');
    const { rows } = await boundSql(this.em).query<{ config_id: string; name: string }>(
      `update node set ${sets.join(', ')} where id = ? returning config_id, name`,
      [...values, new Date(), id],
    );
    const row = rows[0];
    return row && { configId: row.config_id, name: row.name };
  }

  /** One statement: links, forwards and its credential go with it by ON DELETE CASCADE. */
  async delete(id: string): Promise<void> {
    await this.em.nativeDelete(Node, { id });
  }

  /**
   * Presence events run as parallel jobs, so they can arrive out of order: an event
   * older than what is recorded must not overwrite it. One conditional UPDATE keeps
   * "newest event wins" without a read-modify-write race. Runtime status is not a
   * configuration change, so updatedAt stays as it is.
   * Undefined when the node does not exist; `applied` is false for a stale event.
   */
  async recordPresence(
    id: string,
    online: boolean,
    at: Date,
  ): Promise<{ applied: boolean; online: boolean; lastSeenAt: string } | undefined> {
    const changed = await this.em.nativeUpdate(
      Node,
      { id, $or: [{ lastSeenAt: null }, { lastSeenAt: { $lte: at } }] },
      { online, lastSeenAt: at },
    );
    const row = await this.em.findOne(Node, { id }, { refresh: true });
    if (!row) return undefined;
    return { applied: changed > 0, online: row.online, lastSeenAt: row.lastSeenAt!.toISOString() };
  }

  async list(configId: string, filter: NodeFilter = {}, req: PageRequest = {}): Promise<Page<NodeView>> {
    const limit = pageLimit(req);
    const cursor = idCursor(req);
    const where: FilterQuery<Node> = { config: configId, ...filter, ...(cursor ? { id: { $gt: cursor } } : {}) };
    const rows = await this.em.find(Node, where, { orderBy: { id: 'asc' }, limit: limit + 1 });
    return toPage(rows, limit, (r) => r.id, nodeView);
  }

  async countInConfig(configId: string): Promise<number> {
    return this.em.count(Node, { config: configId });
  }

  /**
   * Several nodes by id (a node's peers, for a config push); unknown ids are left out.
   * Chunked so that a large mesh stays far below every driver's bound-parameter limit.
   */
  async getMany(ids: readonly string[]): Promise<NodeView[]> {
    const out: NodeView[] = [];
    for (let i = 0; i < ids.length; i += 1_000) {
      const rows = await this.em.find(Node, { id: { $in: ids.slice(i, i + 1_000) } }, { orderBy: { id: 'asc' } });
      out.push(...rows.map(nodeView));
    }
    return out;
  }

  /**
   * Id and config of every dynamic node (of one config when given), ordered by id: the
   * nodes with an agent, i.e. the receivers of config pushes. Raw rows: a restore may
   * bring thousands.
   */
  async dynamicNodes(configId?: string): Promise<{ id: string; configId: string }[]> {
    const rows = await this.em
      .createQueryBuilder(Node)
      .select(['id', 'config'])
      .where({ kind: 'dynamic', ...(configId ? { config: configId } : {}) })
      .orderBy({ id: 'asc' })
      .execute<{ id: string; config: string }[]>('all');
    return rows.map((r) => ({ id: r.id, configId: r.config }));
  }
}

/* -------------------------------------------------------------------- links */

export interface NewLink {
  configId: string;
  fromNodeId: string;
  toNodeId: string;
  linkGroupId: string;
  allowedIps: string[];
  persistentKeepalive: number | null;
}

export interface LinkView extends NewLink {
  id: string;
}

export const linkView = (l: PeerLink): LinkView => ({
  id: l.id,
  configId: l.config,
  fromNodeId: l.fromNode,
  toNodeId: l.toNode,
  linkGroupId: l.linkGroupId,
  allowedIps: l.allowedIps,
  persistentKeepalive: l.persistentKeepalive ?? null,
});

export class LinkRepository {
  constructor(private readonly em: Em) {}

  /**
   * The pairs a config already has, as pairKey strings. Raw rows, not entities: a full
   * 300-node mesh has 89,700 links and hydrating them would only fill the identity map.
   */
  async existingPairKeys(configId: string): Promise<Set<string>> {
    const rows = await this.em
      .createQueryBuilder(PeerLink)
      .select(['fromNode', 'toNode'])
      .where({ config: configId })
      .execute<{ fromNode: string; toNode: string }[]>('all');
    return pairKeysOfLinks(rows.map((r) => ({ fromNodeId: r.fromNode, toNodeId: r.toNode })));
  }

  /**
   * One multi-row INSERT per call, straight to the database: nothing enters the identity
   * map, so memory stays flat however many batches a job inserts. Callers keep batches
   * to about a thousand rows (7 parameters each, well under SQLite's 32,766 and
   * PostgreSQL's 65,535 bound parameters).
   */
  async insertBatch(rows: NewLink[]): Promise<number> {
    if (rows.length === 0) return 0;
    await this.em.insertMany(
      PeerLink,
      rows.map((r) => ({
        id: newId(),
        config: r.configId,
        fromNode: r.fromNodeId,
        toNode: r.toNodeId,
        linkGroupId: r.linkGroupId,
        allowedIps: r.allowedIps,
        persistentKeepalive: r.persistentKeepalive,
      })),
    );
    return rows.length;
  }

  async get(id: string): Promise<LinkView | undefined> {
    const row = await this.em.findOne(PeerLink, { id });
    return row ? linkView(row) : undefined;
  }

  async countInConfig(configId: string): Promise<number> {
    return this.em.count(PeerLink, { config: configId });
  }

  /** A node's outgoing links: its peers, for a config push. */
  async fromNode(nodeId: string): Promise<LinkView[]> {
    const rows = await this.em.find(PeerLink, { fromNode: nodeId }, { orderBy: { id: 'asc' } });
    return rows.map(linkView);
  }

  async list(configId: string, filter: { nodeId?: string } = {}, req: PageRequest = {}): Promise<Page<LinkView>> {
    const limit = pageLimit(req);
    const cursor = idCursor(req);
    const where: FilterQuery<PeerLink> = {
      config: configId,
      ...(filter.nodeId ? { fromNode: filter.nodeId } : {}),
      ...(cursor ? { id: { $gt: cursor } } : {}),
    };
    const rows = await this.em.find(PeerLink, where, { orderBy: { id: 'asc' }, limit: limit + 1 });
    return toPage(rows, limit, (r) => r.id, linkView);
  }
}

/* -------------------------------------------------------------- credentials */

/** What the API may show of an MQTT credential: never the hash or the salt. */
export interface CredentialView {
  username: string;
  clientId: string;
  version: number;
  rotatedAt: string;
}

export const credentialView = (c: MqttCredential): CredentialView => ({
  username: c.username,
  clientId: c.clientId,
  version: c.version,
  rotatedAt: c.rotatedAt.toISOString(),
});

/** One EMQX user as the broker sync wants it (hash and salt, never a password). */
export interface BrokerCredential {
  nodeId: string;
  configId: string;
  username: string;
  clientId: string;
  passwordHash: string;
  salt: string;
  version: number;
}

export const mqttUsername = (nodeId: string) => `node-${nodeId}`;

export class CredentialRepository {
  constructor(private readonly em: Em) {}

  async forNode(nodeId: string): Promise<CredentialView | undefined> {
    const row = await this.em.findOne(MqttCredential, { node: nodeId });
    return row ? credentialView(row) : undefined;
  }

  create(nodeId: string, secret: { passwordHash: string; salt: string }): CredentialView {
    const username = mqttUsername(nodeId);
    const row = this.em.create(MqttCredential, {
      id: newId(),
      node: nodeId,
      username,
      clientId: username,
      ...secret,
      version: 1,
      rotatedAt: new Date(),
    });
    return credentialView(row);
  }

  /**
   * Stores a new hash and salt and bumps the version (the broker sync kicks sessions of
   * older versions). A dynamic node without a credential (e.g. restored from data that
   * predates it) gets its first one.
   */
  async rotate(nodeId: string, secret: { passwordHash: string; salt: string }): Promise<CredentialView> {
    const row = await this.em.findOne(MqttCredential, { node: nodeId });
    if (!row) return this.create(nodeId, secret);
    this.em.assign(row, { ...secret, version: row.version + 1, rotatedAt: new Date() });
    return credentialView(row);
  }

  /** How many credentials deleting this config would remove (broker sync needed if any). */
  async countInConfig(configId: string): Promise<number> {
    const nodeIds = await this.dynamicNodeIds({ config: configId });
    if (nodeIds.size === 0) return 0;
    return this.em.count(MqttCredential, { node: { $in: [...nodeIds.keys()] } });
  }

  /**
   * The desired EMQX state: the credential of every dynamic node with the node's config,
   * ordered by node id. Call inside one read transaction so both reads see one state.
   * Two plain reads instead of a join: the relations are mapped to keys, and raw rows keep
   * thousands of credentials out of the identity map.
   */
  async brokerCredentials(): Promise<BrokerCredential[]> {
    const configOf = await this.dynamicNodeIds({});
    const rows = await this.em
      .createQueryBuilder(MqttCredential)
      .select(['node', 'username', 'clientId', 'passwordHash', 'salt', 'version'])
      .orderBy({ node: 'asc' })
      .execute<{ node: string; username: string; clientId: string; passwordHash: string; salt: string; version: number }[]>('all');
    return rows.flatMap((r) => {
      const configId = configOf.get(r.node);
      if (configId === undefined) return [];
      return [{ nodeId: r.node, configId, ...pick(r, 'username', 'clientId', 'passwordHash', 'salt'), version: Number(r.version) }];
    });
  }

  /** node id -> config id of the dynamic nodes matching `where`. */
  private async dynamicNodeIds(where: { config?: string }): Promise<Map<string, string>> {
    const rows = await this.em
      .createQueryBuilder(Node)
      .select(['id', 'config'])
      .where({ ...where, kind: 'dynamic' })
      .execute<{ id: string; config: string }[]>('all');
    return new Map(rows.map((r) => [r.id, r.config]));
  }
}

function pick<T extends object, K extends keyof T>(obj: T, ...keys: K[]): Pick<T, K> {
  const out = {} as Pick<T, K>;
  for (const k of keys) out[k] = obj[k];
  return out;
}

/* ------------------------------------------------------------ port forwards */

export interface NewForward {
  configId: string;
  fromNodeId: string;
  fromPort: number;
  toNodeId: string;
  toPort: number;
  protocol: ForwardProtocol;
}

export interface ForwardView extends NewForward {
  id: string;
  enabled: boolean;
  createdAt: string;
}

export const forwardView = (f: PortForwardRule): ForwardView => ({
  id: f.id,
  configId: f.config,
  fromNodeId: f.fromNode,
  fromPort: f.fromPort,
  toNodeId: f.toNode,
  toPort: f.toPort,
  protocol: f.protocol as ForwardProtocol,
  enabled: f.enabled,
  createdAt: f.createdAt.toISOString(),
});

export class ForwardRepository {
  constructor(private readonly em: Em) {}

  async get(id: string): Promise<ForwardView | undefined> {
    const row = await this.em.findOne(PortForwardRule, { id });
    return row ? forwardView(row) : undefined;
  }

  async require(id: string): Promise<ForwardView> {
    const row = await this.em.findOne(PortForwardRule, { id });
    if (!row) throw new NotFoundError('port-forward rule', id);
    return forwardView(row);
  }

  /** The rule already forwarding to this target, if any (toNode + toPort + protocol is unique). */
  async findByTarget(toNodeId: string, toPort: number, protocol: ForwardProtocol): Promise<ForwardView | undefined> {
    const row = await this.em.findOne(PortForwardRule, { toNode: toNodeId, toPort, protocol });
    return row ? forwardView(row) : undefined;
  }

  create(rule: NewForward): string {
    const id = newId();
    this.em.create(PortForwardRule, {
      id,
      config: rule.configId,
      fromNode: rule.fromNodeId,
      fromPort: rule.fromPort,
      toNode: rule.toNodeId,
      toPort: rule.toPort,
      protocol: rule.protocol,
      enabled: true,
      createdAt: new Date(),
    });
    return id;
  }

  async delete(id: string): Promise<void> {
    await this.em.nativeDelete(PortForwardRule, { id });
  }

  async countInConfig(configId: string): Promise<number> {
    return this.em.count(PortForwardRule, { config: configId });
  }

  async list(configId: string, filter: { nodeId?: string } = {}, req: PageRequest = {}): Promise<Page<ForwardView>> {
    const limit = pageLimit(req);
    const cursor = idCursor(req);
    const where: FilterQuery<PortForwardRule> = {
      config: configId,
      ...(filter.nodeId ? { $or: [{ fromNode: filter.nodeId }, { toNode: filter.nodeId }] } : {}),
      ...(cursor ? { id: { $gt: cursor } } : {}),
    };
    const rows = await this.em.find(PortForwardRule, where, { orderBy: { id: 'asc' }, limit: limit + 1 });
    return toPage(rows, limit, (r) => r.id, forwardView);
  }
}
