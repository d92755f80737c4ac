/** The peer links of a mesh: one row per direction of a pair. */
import type { FilterQuery } from '@mikro-orm/core';
import type { Em } from '../db/orm.js';
import { PeerLink } from '../domain/entities/mesh.js';
import { newId } from '../domain/ids.js';
import { idCursor, pageLimit, toPage, type Page, type PageRequest } from '../domain/paging.js';
import { pairKeysOfLinks } from '../domain/pairs.js';

export interface NewLink {
  configId: string;
  fromNodeId: string;
  toNodeId: string;
  linkGroupId: string;
  allowedIps: string[];
  persistentKeepalive: number | null;
}

interface LinkView extends NewLink {
  id: string;
}

const linkView = (l: PeerLink): LinkView => ({
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
