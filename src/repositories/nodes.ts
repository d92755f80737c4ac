/**
 * The nodes of the mesh. Processors call these methods and never see the EntityManager.
 * Node private keys are encrypted here with the server key and never leave decrypted but
 * through privateKey (config push).
 */
import type { FilterQuery } from '@mikro-orm/core';
import type { Em } from '../db/orm.js';
import { boundSql, type BoundSql, type SqlValue } from '../db/sql.js';
import { unmanaged, type TransactionHandle } from '../db/unit-of-work.js';
import { canonicalAddress } from '../domain/cidr.js';
import { Node } from '../domain/entities/mesh.js';
import { DomainError, NotFoundError } from '../domain/errors.js';
import { newId } from '../domain/ids.js';
import { idCursor, pageLimit, toPage, type Page, type PageRequest } from '../domain/paging.js';
import { decryptSecret, encryptSecret } from '../domain/secrets.js';
import type { NodeKind } from '../domain/validation.js';

const iso = (d: Date | null | undefined): string | null => d?.toISOString() ?? null;

interface NewNode {
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

interface NodePatch {
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

const nodeView = (n: Node): NodeView => ({
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

interface NodeFilter {
  kind?: NodeKind;
  online?: boolean;
}

export class NodeRepository {
  /** Bound statements: on the write transaction's own connection when there is one. */
  private readonly sql: BoundSql;

  constructor(
    private readonly em: Em,
    private readonly serverKey: Buffer,
    tx?: TransactionHandle,
  ) {
    this.sql = tx?.sql ?? boundSql(em);
  }

  async get(id: string): Promise<NodeView | undefined> {
    const row = await this.em.findOne(Node, { id });
    return row ? nodeView(row) : undefined;
  }

  /** Which of these node ids exist: one bound query (the API's batched probe of submitted ids). */
  async existing(ids: readonly string[]): Promise<Set<string>> {
    const { rows } = await this.sql.query<{ id: string }>(`select id from node where id in (${ids.map(() => '?').join(', ')})`, ids);
    return new Set(rows.map((r) => r.id));
  }

  /** Views are plain objects, so the row need not be managed (node.update, the hottest job, reads the node here). */
  async require(id: string): Promise<NodeView> {
    const row = await this.em.findOne(Node, { id }, unmanaged);
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
    const { rows } = await this.sql.query<{ config_id: string; name: string }>(
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
