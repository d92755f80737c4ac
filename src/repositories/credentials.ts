/** The MQTT credentials of dynamic nodes: hashes and salts only, never a password. */
import type { Em } from '../db/orm.js';
import { MqttCredential, Node } from '../domain/entities/mesh.js';
import { newId } from '../domain/ids.js';

/** What the API may show of an MQTT credential: never the hash or the salt. */
interface CredentialView {
  username: string;
  clientId: string;
  version: number;
  rotatedAt: string;
}

const credentialView = (c: MqttCredential): CredentialView => ({
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
