/** The mesh configs: one WireGuard network each (subnet, port, DNS, protocol). */
import { LockMode, type FilterQuery } from '@mikro-orm/core';
import type { Em } from '../db/orm.js';
import { canonicalAddress, canonicalCidr } from '../domain/cidr.js';
import { MeshConfig } from '../domain/entities/mesh.js';
import { NotFoundError } from '../domain/errors.js';
import { newId } from '../domain/ids.js';
import { idCursor, pageLimit, toPage, type Page, type PageRequest } from '../domain/paging.js';
import type { AwgParams, TunnelProtocol } from '../domain/validation.js';

interface ConfigFields {
  name: string;
  subnet: string;
  listenPort: number;
  dns: string[];
  mtu: number;
  protocol: TunnelProtocol;
  awg?: AwgParams | null;
}

type ConfigPatch = Partial<Omit<ConfigFields, 'subnet'>>;

export interface ConfigView extends Required<Omit<ConfigFields, 'awg'>> {
  id: string;
  awg: AwgParams | null;
  createdAt: string;
  updatedAt: string;
}

const configView = (c: MeshConfig): ConfigView => ({
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
