/**
 * Who must hear about a change (the receivers of config pushes, written to the
 * push_request outbox), and each node's sync state: the revision meshq published to it
 * (and the hash of that content) and the revision its agent acknowledged (the node_sync
 * system table, see its entity). Requests are written set-based: one statement marks
 * every receiver of a change, whatever the mesh size.
 */
import type { Em } from '../db/orm.js';
import { boundSql, type BoundSql } from '../db/sql.js';
import type { TransactionHandle } from '../db/unit-of-work.js';
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

/** A node's pending push request as a batch read it (it settles the request at this seq). */
export interface PushRequestTaken {
  nodeId: string;
  seq: number;
  resend: boolean;
}

/** A node's published state, for the batch to compare content hashes. */
export interface PublishedState {
  revision: number;
  contentHash: string;
  applied: number | null;
}

/** Who receives a push request: the `select` of node ids an insert takes its rows from. */
export type PushReceivers =
  | { readonly nodeIds: readonly string[] }
  | { readonly peersOf: string }
  | { readonly nodeAndPeers: string }
  | { readonly configId: string }
  | { readonly all: true };

/** Why an acknowledgement changed nothing. */
export type IgnoredAck = AppliedAck & { reason: 'never issued' | 'future' | 'stale' };

const asDate = (v: unknown): Date | null => (v === null || v === undefined ? null : v instanceof Date ? v : new Date(v as string | number));
const iso = (v: unknown): string | null => asDate(v)?.toISOString() ?? null;

/** Lagging: published at least once, and the agent acknowledged nothing or an older revision. */
const LAGGING =
  'from node n join node_sync s on s.node_id = n.id' +
  " where n.kind = 'dynamic' and (s.applied_revision is null or s.applied_revision < s.desired_revision)";

/**
 * The oldest requests (at most the first parameter), each with its node's count of
 * outgoing links, counted in request order only while the counts before stay under the
 * budget (the second): the first request past it is still counted, and the caller cuts
 * there. Counting is an index-only scan per node, and a batch that counted every request
 * it looked at would count again, on the next page, the half it left.
 */
const PENDING_WITH_PEERS =
  'with recursive pending as (select node_id, seq, resend, row_number() over (order by requested_at, node_id) as k from push_request order by requested_at, node_id limit ?),' +
  ' page (k, node_id, seq, resend, peers, before) as (' +
  'select k, node_id, seq, resend, (select count(*) from peer_link where from_node_id = p.node_id), cast(0 as bigint) from pending p where k = 1' +
  ' union all select p.k, p.node_id, p.seq, p.resend, (select count(*) from peer_link where from_node_id = p.node_id), t.before + t.peers' +
  ' from page t join pending p on p.k = t.k + 1 where t.before + t.peers < ?)' +
  ' select node_id, seq, resend, peers, (select count(*) from pending) as pending from page order by k';

/** Bound parameters per `in (...)` list, far below every driver's limit. */
const CHUNK = 1_000;

/** A request joins the node's waiting one: its seq goes up, so a batch that read the older seq leaves it. */
const ON_REQUEST_CONFLICT =
  ' on conflict (node_id) do update set seq = push_request.seq + 1, resend = (push_request.resend or excluded.resend), requested_at = excluded.requested_at';

/**
 * A node's dynamic peers: the nodes it links to, and those linking to it, which belong to
 * its config (a link's nodes do) and are each one probe of the (from, to) unique index
 * (PostgreSQL has no to_node_id index; src/migrations/peer-link-references.ts). Links come
 * in pairs, so the probe is only reached for a one-way link. `id` appears four times.
 */
const DYNAMIC_PEERS_OF = (id: string) =>
  `select n.id from node n where n.kind = 'dynamic' and n.config_id = (select config_id from node where id = ${id}) and n.id <> ${id}` +
  ` and (n.id in (select to_node_id from peer_link where from_node_id = ${id})` +
  ` or exists (select 1 from peer_link l where l.from_node_id = n.id and l.to_node_id = ${id}))`;

/** The receivers' select: node ids, parameters after the request's own two (resend, requested_at). */
function receiversSelect(target: PushReceivers): { text: string; params: string[] } {
  if ('nodeIds' in target) return { text: `select id from node where kind = 'dynamic' and id in (${target.nodeIds.map(() => '?').join(', ')})`, params: [...target.nodeIds] };
  if ('peersOf' in target) return { text: DYNAMIC_PEERS_OF('?'), params: Array<string>(4).fill(target.peersOf) };
  if ('nodeAndPeers' in target) {
    return { text: `select id from node where kind = 'dynamic' and id = ? union ${DYNAMIC_PEERS_OF('?')}`, params: Array<string>(5).fill(target.nodeAndPeers) };
  }
  if ('configId' in target) return { text: "select id from node where kind = 'dynamic' and config_id = ?", params: [target.configId] };
  return { text: "select id from node where kind = 'dynamic'", params: [] };
}

export class NodeSyncRepository {
  private readonly sql: BoundSql;

  constructor(
    private readonly em: Em,
    tx?: TransactionHandle,
  ) {
    this.sql = tx?.sql ?? boundSql(em);
  }

  /**
   * Writes a push request for every dynamic node `target` names (static and unknown ids
   * are left out) in one statement; `resend` asks for the unacknowledged revision again.
   * Returns how many nodes it marked.
   */
  async requestPushes(target: PushReceivers, opts: { resend?: boolean; at?: Date } = {}): Promise<number> {
    if ('nodeIds' in target && target.nodeIds.length === 0) return 0;
    let marked = 0;
    // Bound parameters per statement stay far below every driver's limit.
    if ('nodeIds' in target && target.nodeIds.length > CHUNK) {
      const ids = [...new Set(target.nodeIds)];
      for (let i = 0; i < ids.length; i += CHUNK) marked += await this.requestPushes({ nodeIds: ids.slice(i, i + CHUNK) }, opts);
      return marked;
    }
    const { text, params } = receiversSelect(target);
    const pg = this.sql.dialect === 'postgresql';
    // PostgreSQL types a parameter in a select list as text: the casts say what the columns take.
    const head = pg ? 'select r.id, 1, cast(? as boolean), cast(? as timestamptz)' : 'select r.id, 1, ?, ?';
    const statement = `insert into push_request (node_id, seq, resend, requested_at) ${head} from (${text}) r where true${ON_REQUEST_CONFLICT}`;
    const { affected } = await this.sql.query(statement, [opts.resend ?? false, opts.at ?? new Date(), ...params]);
    return affected;
  }

  /**
   * Push requests for nodes this job created (known dynamic, perhaps not yet visible to a
   * select): written from the ids alone.
   */
  async requestPushesForNew(nodeIds: readonly string[], at = new Date()): Promise<number> {
    const ids = [...new Set(nodeIds)];
    let marked = 0;
    for (let i = 0; i < ids.length; i += CHUNK) {
      const slice = ids.slice(i, i + CHUNK);
      const values = slice.map(() => '(?, 1, ?, ?)').join(', ');
      const { affected } = await this.sql.query(
        `insert into push_request (node_id, seq, resend, requested_at) values ${values}${ON_REQUEST_CONFLICT}`,
        slice.flatMap((id) => [id, false, at]),
      );
      marked += affected;
    }
    return marked;
  }

  /**
   * The oldest pending push requests (at most `limit`) in order, each with how many
   * outgoing links its node has, up to the first whose links take the count past
   * `peerBudget`; and how many of the `limit` oldest are pending (the ones listed
   * included). One statement.
   */
  async pendingPushesWithPeers(limit: number, peerBudget: number): Promise<{ requests: (PushRequestTaken & { peers: number })[]; pending: number }> {
    const { rows } = await this.sql.query<{ node_id: string; seq: number | string; resend: boolean | number; peers: number | string; pending: number | string }>(
      PENDING_WITH_PEERS,
      [limit, peerBudget],
    );
    return {
      requests: rows.map((r) => ({ nodeId: r.node_id, seq: Number(r.seq), resend: r.resend === true || r.resend === 1, peers: Number(r.peers) })),
      pending: Number(rows[0]?.pending ?? 0),
    };
  }

  /**
   * Deletes the requests a batch served, each only at the seq the batch read: a request
   * made since (seq went up) stays for the next batch.
   */
  async settlePushes(taken: readonly PushRequestTaken[]): Promise<void> {
    for (let i = 0; i < taken.length; i += CHUNK / 2) {
      const slice = taken.slice(i, i + CHUNK / 2);
      await this.sql.query(
        `delete from push_request where ${slice.map(() => '(node_id = ? and seq = ?)').join(' or ')}`,
        slice.flatMap((t) => [t.nodeId, t.seq]),
      );
    }
  }

  /** The published state of these nodes (nodes never pushed to are left out). */
  async publishedMany(nodeIds: readonly string[]): Promise<Map<string, PublishedState>> {
    const out = new Map<string, PublishedState>();
    for (let i = 0; i < nodeIds.length; i += CHUNK) {
      const slice = nodeIds.slice(i, i + CHUNK);
      const { rows } = await this.sql.query<Record<string, unknown>>(
        `select node_id, desired_revision, content_hash, applied_revision from node_sync where node_id in (${slice.map(() => '?').join(', ')})`,
        slice,
      );
      for (const r of rows) {
        out.set(String(r.node_id), {
          revision: Number(r.desired_revision),
          contentHash: String(r.content_hash),
          applied: r.applied_revision == null ? null : Number(r.applied_revision),
        });
      }
    }
    return out;
  }

  /** Records the revisions published to these nodes, in one statement per slice. */
  async recordPublishedMany(published: readonly { nodeId: string; revision: number; contentHash: string }[], at: Date): Promise<void> {
    const SLICE = CHUNK / 4;
    for (let i = 0; i < published.length; i += SLICE) {
      const slice = published.slice(i, i + SLICE);
      await this.sql.query(
        'insert into node_sync (node_id, desired_revision, content_hash, desired_at, applied_revision, applied_at) values ' +
          slice.map(() => '(?, ?, ?, ?, null, null)').join(', ') +
          ' on conflict (node_id) do update set desired_revision = excluded.desired_revision, content_hash = excluded.content_hash, desired_at = excluded.desired_at',
        slice.flatMap((p) => [p.nodeId, p.revision, p.contentHash, at]),
      );
    }
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
