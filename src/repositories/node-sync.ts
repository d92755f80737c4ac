/**
 * Who must hear about a change (the receivers of config pushes), and each node's sync
 * state: the revision meshq published to it (and the hash of that content) and the
 * revision its agent acknowledged (the node_sync system table, see its entity).
 */
import type { Em } from '../db/orm.js';
import { boundSql, type BoundSql } from '../db/sql.js';
import type { TransactionHandle } from '../db/unit-of-work.js';
import { Node } from '../domain/entities/mesh.js';
import { NodeSync } from '../domain/entities/system.js';

/** What the API shows of a node's sync: `applied` is null until the first acknowledgement. */
export interface NodeSyncView {
  desired: number;
  applied: number | null;
  appliedAt: string | null;
}

/** A node whose agent has not acknowledged its desired revision yet. */
export interface LaggingNode extends NodeSyncView {
  nodeId: string;
  name: string;
  desiredAt: string;
}

/** One acknowledgement as the agent sent it. */
export interface AppliedAck {
  nodeId: string;
  revision: number;
}

/** Why an acknowledgement changed nothing. */
export type IgnoredAck = AppliedAck & { reason: 'never issued' | 'future' | 'stale' };

const asDate = (v: unknown): Date | null => (v === null || v === undefined ? null : v instanceof Date ? v : new Date(v as string | number));
const iso = (v: unknown): string | null => asDate(v)?.toISOString() ?? null;

/** Lagging: published at least once, and the agent acknowledged nothing or an older revision. */
const LAGGING =
  'from node n join node_sync s on s.node_id = n.id' +
  " where n.kind = 'dynamic' and (s.applied_revision is null or s.applied_revision < s.desired_revision)";

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

  /** The node's published revision, its content hash and the revision its agent acknowledged; undefined before its first push. */
  async published(nodeId: string): Promise<{ revision: number; contentHash: string; applied: number | null } | undefined> {
    const row = await this.em
      .createQueryBuilder(NodeSync)
      .select(['desiredRevision', 'contentHash', 'appliedRevision'])
      .where({ nodeId })
      .execute<{ desiredRevision: number; contentHash: string; appliedRevision: number | null } | null>('get');
    if (!row) return undefined;
    return { revision: Number(row.desiredRevision), contentHash: row.contentHash, applied: row.appliedRevision === null ? null : Number(row.appliedRevision) };
  }

  /** Records that `revision` with content `contentHash` was published to the node. */
  async recordPublished(nodeId: string, revision: number, contentHash: string, at: Date): Promise<void> {
    await this.em
      .createQueryBuilder(NodeSync)
      .insert({ nodeId, desiredRevision: revision, contentHash, desiredAt: at, appliedRevision: null, appliedAt: null })
      .onConflict('nodeId')
      .merge(['desiredRevision', 'contentHash', 'desiredAt'])
      .execute();
  }

  /**
   * Records agents' acknowledgements. One counts when meshq issued that revision (at most
   * the node's desired one) and it is newer than the one recorded; the rest change
   * nothing and are returned with the reason, for the caller to log.
   */
  async recordApplied(acks: readonly AppliedAck[], at: Date): Promise<{ recorded: number; ignored: IgnoredAck[] }> {
    const ignored: IgnoredAck[] = [];
    let recorded = 0;
    const ids = [...new Set(acks.map((a) => a.nodeId))];
    const rows = new Map<string, { desired: number; applied: number | null }>();
    for (let i = 0; i < ids.length; i += CHUNK) {
      const found = await this.em
        .createQueryBuilder(NodeSync)
        .select(['nodeId', 'desiredRevision', 'appliedRevision'])
        .where({ nodeId: { $in: ids.slice(i, i + CHUNK) } })
        .execute<{ nodeId: string; desiredRevision: number; appliedRevision: number | null }[]>('all');
      for (const r of found) {
        rows.set(r.nodeId, { desired: Number(r.desiredRevision), applied: r.appliedRevision === null ? null : Number(r.appliedRevision) });
      }
    }
    for (const ack of acks) {
      const row = rows.get(ack.nodeId);
      if (!row) ignored.push({ ...ack, reason: 'never issued' });
      else if (ack.revision > row.desired) ignored.push({ ...ack, reason: 'future' });
      else if (row.applied !== null && ack.revision <= row.applied) ignored.push({ ...ack, reason: 'stale' });
      else {
        await this.em.createQueryBuilder(NodeSync).update({ appliedRevision: ack.revision, appliedAt: at }).where({ nodeId: ack.nodeId }).execute();
        row.applied = ack.revision;
        recorded++;
      }
    }
    return { recorded, ignored };
  }

  /** A node's sync state as the API shows it (desired 0: nothing published yet). */
  async view(nodeId: string): Promise<NodeSyncView> {
    const row = await this.em
      .createQueryBuilder(NodeSync)
      .select(['desiredRevision', 'appliedRevision', 'appliedAt'])
      .where({ nodeId })
      .execute<{ desiredRevision: number; appliedRevision: number | null; appliedAt: unknown } | null>('get');
    if (!row) return { desired: 0, applied: null, appliedAt: null };
    return { desired: Number(row.desiredRevision), applied: row.appliedRevision === null ? null : Number(row.appliedRevision), appliedAt: iso(row.appliedAt) };
  }

  /** The config's dynamic nodes whose agent has not acknowledged their desired revision, by id. */
  async lagging(configId: string): Promise<LaggingNode[]> {
    const { rows } = await this.sql.query<Record<string, unknown>>(LAGGING_IN_CONFIG, [configId]);
    return rows.map((r) => ({
      nodeId: String(r.id),
      name: String(r.name),
      desired: Number(r.desired_revision),
      desiredAt: iso(r.desired_at)!,
      applied: r.applied_revision === null ? null : Number(r.applied_revision),
      appliedAt: iso(r.applied_at),
    }));
  }

  /** How many dynamic nodes lag, over every config (for /metrics). */
  async laggingCount(): Promise<number> {
    const { rows } = await this.sql.query<{ lagging: number | string }>(LAGGING_COUNT);
    return Number(rows[0]?.lagging ?? 0);
  }
}

const LAGGING_IN_CONFIG = `select n.id, n.name, s.desired_revision, s.desired_at, s.applied_revision, s.applied_at ${LAGGING} and n.config_id = ? order by n.id`;
const LAGGING_COUNT = `select count(*) as lagging ${LAGGING}`;
