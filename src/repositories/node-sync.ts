/**
 * Who must hear about a change (the receivers of config pushes), and later each node's
 * sync state: what meshq wants it to run and what its agent acknowledged.
 */
import type { Em } from '../db/orm.js';
import { boundSql, type BoundSql } from '../db/sql.js';
import type { TransactionHandle } from '../db/unit-of-work.js';
import { Node } from '../domain/entities/mesh.js';

/** Bound parameters per `in (...)` list, far below every driver's limit. */
const CHUNK = 1_000;

const PEERS_OF =
  "select n.id from node n where n.kind = 'dynamic' and n.id <> ? and (n.id in (select to_node_id from peer_link where from_node_id = ?)" +
  ' or n.id in (select from_node_id from peer_link where to_node_id = ?)) order by n.id';

export class NodeSyncRepository {
  private readonly sql: BoundSql;

  constructor(
    private readonly em: Em,
    tx?: TransactionHandle,
  ) {
    this.sql = tx?.sql ?? boundSql(em);
  }

  /** The dynamic nodes among `ids`, in id order (unknown and static ids are left out). */
  async dynamicAmong(ids: readonly string[]): Promise<string[]> {
    const out: string[] = [];
    const unique = [...new Set(ids)];
    for (let i = 0; i < unique.length; i += CHUNK) {
      const rows = await this.em
        .createQueryBuilder(Node)
        .select(['id'])
        .where({ kind: 'dynamic', id: { $in: unique.slice(i, i + CHUNK) } })
        .execute<{ id: string }[]>('all');
      out.push(...rows.map((r) => r.id));
    }
    return out.sort();
  }

  /**
   * The dynamic nodes linked to `nodeId` in either direction (its peers, and the nodes
   * that have it as a peer), without the node itself: one query whatever the mesh size.
   */
  async dynamicPeersOf(nodeId: string): Promise<string[]> {
    const { rows } = await this.sql.query<{ id: string }>(PEERS_OF, [nodeId, nodeId, nodeId]);
    return rows.map((r) => r.id);
  }
}
