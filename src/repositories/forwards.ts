/** Port-forward rules between nodes of one config. */
import type { FilterQuery } from '@mikro-orm/core';
import type { Em } from '../db/orm.js';
import { PortForwardRule } from '../domain/entities/mesh.js';
import { NotFoundError } from '../domain/errors.js';
import { newId } from '../domain/ids.js';
import { idCursor, pageLimit, toPage, type Page, type PageRequest } from '../domain/paging.js';
import type { ForwardProtocol } from '../domain/validation.js';

interface NewForward {
  configId: string;
  fromNodeId: string;
  fromPort: number;
  toNodeId: string;
  toPort: number;
  protocol: ForwardProtocol;
}

interface ForwardView extends NewForward {
  id: string;
  enabled: boolean;
  createdAt: string;
}

const forwardView = (f: PortForwardRule): ForwardView => ({
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
