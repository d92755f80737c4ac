/**
 * What config pushes are made of, read set-based: the interfaces of many nodes in one
 * query and the peers of many nodes in one query, whatever the mesh size. Callers page
 * the nodes they ask for (`peerCounts` says how many rows a page will bring), so memory
 * follows the page, not the mesh.
 */
import type { Em } from '../db/orm.js';
import { boundSql, type BoundSql } from '../db/sql.js';
import type { TransactionHandle } from '../db/unit-of-work.js';
import { decryptSecret } from '../domain/secrets.js';
import type { AwgParams, TunnelProtocol } from '../domain/validation.js';

/** One `[Peer]` of a node's configuration: the peer's key and endpoint, the link's allowed IPs. */
export interface PushedPeer {
  nodeId: string;
  name: string;
  publicKey: string;
  /** `host:port`, or null when the peer has none (it is reached when it connects). */
  endpoint: string | null;
  listenPort: number;
  allowedIps: string[];
  persistentKeepalive: number | null;
}

/** A node's own interface and its config's settings, as a push carries them. */
export interface PushInterface {
  nodeId: string;
  configId: string;
  kind: string;
  name: string;
  address: string;
  subnet: string;
  /** The node's own listen port, or the config's. */
  listenPort: number;
  publicKey: string;
  /** Decrypted; null when the node's agent holds its own key. */
  privateKey: string | null;
  dns: string[];
  protocol: TunnelProtocol;
  awg: AwgParams | null;
}

/** JSON columns: text on SQLite, parsed already by node-postgres. */
const json = <T>(v: unknown): T => (typeof v === 'string' ? (JSON.parse(v) as T) : (v as T));

/** `?, ?, …`: one text per list length, made once (bound SQL memoises texts by value). */
const placeholderTexts = new Map<string, string>();
function listText(template: string, n: number): string {
  const key = `${n}:${template}`;
  let text = placeholderTexts.get(key);
  if (text === undefined) {
    text = template.replace('(?list)', `(${Array.from({ length: n }, () => '?').join(', ')})`);
    placeholderTexts.set(key, text);
  }
  return text;
}

const INTERFACES =
  'select n.id, n.config_id, n.kind, n.name, n.address, coalesce(n.listen_port, c.listen_port) as listen_port, n.public_key, n.private_key_enc,' +
  ' c.subnet, c.dns, c.protocol, c.awg from node n join mesh_config c on c.id = n.config_id where n.id in (?list)';

/**
 * Every node of the configs these nodes belong to, as a peer is listed: a link never
 * spans configs, so this holds every peer the page's links name, each once, however many
 * links name it.
 */
const PEER_NODES =
  'select p.id, p.name, p.public_key, p.endpoint, coalesce(p.listen_port, c.listen_port) as listen_port from node p join mesh_config c on c.id = p.config_id' +
  ' where p.config_id in (select config_id from node where id in (?list))';

/**
 * Narrow rows, in no order: each node's links are put in link id order here (as every
 * push and wireguard.conf has always listed them), since a sort of a page's rows in the
 * database outgrows its default sort memory and spills to disk.
 */
const LINKS = 'select id, from_node_id, to_node_id, allowed_ips, persistent_keepalive from peer_link where from_node_id in (?list)';

const PEER_COUNTS = 'select from_node_id, count(*) as peers from peer_link where from_node_id in (?list) group by from_node_id';

/** A peer as every link to it lists it (the link's own fields aside). */
export interface PeerNode {
  nodeId: string;
  name: string;
  publicKey: string;
  endpoint: string | null;
  listenPort: number;
}

/** One outgoing link of a node: which peer, and the link's own fields. */
export interface PeerLinkRow {
  toNodeId: string;
  allowedIps: string[];
  persistentKeepalive: number | null;
}

export class PushContentRepository {
  private readonly sql: BoundSql;

  constructor(
    em: Em,
    private readonly serverKey: Buffer,
    tx?: TransactionHandle,
  ) {
    this.sql = tx?.sql ?? boundSql(em);
  }

  /** The interfaces of these nodes (ids that do not exist are left out), by node id. */
  async interfaces(nodeIds: readonly string[]): Promise<Map<string, PushInterface>> {
    const out = new Map<string, PushInterface>();
    if (nodeIds.length === 0) return out;
    const { rows } = await this.sql.query<Record<string, unknown>>(listText(INTERFACES, nodeIds.length), nodeIds);
    for (const r of rows) {
      const enc = r.private_key_enc as string | null;
      out.set(String(r.id), {
        nodeId: String(r.id),
        configId: String(r.config_id),
        kind: String(r.kind),
        name: String(r.name),
        address: String(r.address),
        subnet: String(r.subnet),
        listenPort: Number(r.listen_port),
        publicKey: String(r.public_key),
        privateKey: enc == null ? null : decryptSecret(enc, this.serverKey),
        dns: json<string[]>(r.dns),
        protocol: r.protocol as TunnelProtocol,
        awg: r.awg == null ? null : json<AwgParams>(r.awg),
      });
    }
    return out;
  }

  /** How many peers each of these nodes has (nodes without links are left out). */
  async peerCounts(nodeIds: readonly string[]): Promise<Map<string, number>> {
    if (nodeIds.length === 0) return new Map();
    const text = listText(PEER_COUNTS, nodeIds.length);
    const run = () => this.sql.query<{ from_node_id: string; peers: number | string }>(text, nodeIds);
    // An index-only count; without the setting, stale statistics make it a full scan (see links).
    const rows = this.sql.dialect === 'postgresql' ? await this.withoutSeqScan(run) : (await run()).rows;
    return new Map(rows.map((r) => [r.from_node_id, Number(r.peers)]));
  }

  /** Every node that a link of these nodes can name (their configs' nodes), by id. */
  async peerNodes(nodeIds: readonly string[]): Promise<Map<string, PeerNode>> {
    const out = new Map<string, PeerNode>();
    if (nodeIds.length === 0) return out;
    const { rows } = await this.sql.query<Record<string, unknown>>(listText(PEER_NODES, nodeIds.length), nodeIds);
    for (const r of rows) {
      out.set(String(r.id), {
        nodeId: String(r.id),
        name: String(r.name),
        publicKey: String(r.public_key),
        endpoint: r.endpoint == null ? null : String(r.endpoint),
        listenPort: Number(r.listen_port),
      });
    }
    return out;
  }

  /** The outgoing links of each of these nodes, in link id order; a node without links has no entry. */
  async links(nodeIds: readonly string[]): Promise<Map<string, PeerLinkRow[]>> {
    const out = new Map<string, PeerLinkRow[]>();
    if (nodeIds.length === 0) return out;
    const text = listText(LINKS, nodeIds.length);
    // Right after a bulk insert (mesh.generate) PostgreSQL's statistics of peer_link are
    // stale: it takes a page's node ids for a large part of the table and scans all of it
    // once per page. The index on from_node_id reads only the page's rows; the setting is
    // local to the transaction and put back after the statement.
    const rows =
      this.sql.dialect === 'postgresql'
        ? await this.withoutSeqScan(() => this.sql.query<Record<string, unknown>>(text, nodeIds))
        : (await this.sql.query<Record<string, unknown>>(text, nodeIds)).rows;
    const byNode = new Map<string, { id: string; link: PeerLinkRow }[]>();
    for (const r of rows) {
      const from = String(r.from_node_id);
      let list = byNode.get(from);
      if (!list) byNode.set(from, (list = []));
      const link = { toNodeId: String(r.to_node_id), allowedIps: json<string[]>(r.allowed_ips), persistentKeepalive: r.persistent_keepalive == null ? null : Number(r.persistent_keepalive) };
      list.push({ id: String(r.id), link });
    }
    // Ids are lower-case UUIDs on both dialects: text order is the database's uuid order.
    for (const [from, list] of byNode) out.set(from, list.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map((l) => l.link));
    return out;
  }

  /** A failed statement aborts the transaction, and the local setting goes with it: no finally needed. */
  private async withoutSeqScan<R>(run: () => Promise<{ rows: R[] }>): Promise<R[]> {
    const { rows } = await this.sql.query<{ seqscan: string }>("select current_setting('enable_seqscan') as seqscan");
    await this.sql.query("select set_config('enable_seqscan', 'off', true)");
    const out = (await run()).rows;
    await this.sql.query("select set_config('enable_seqscan', ?, true)", [rows[0]!.seqscan]);
    return out;
  }

  /**
   * The peers of each of these nodes: one per outgoing link, in link id order. A node
   * without links has no entry. Links cascade with their nodes, so every link names a peer.
   */
  async peers(nodeIds: readonly string[]): Promise<Map<string, PushedPeer[]>> {
    const [nodes, links] = [await this.peerNodes(nodeIds), await this.links(nodeIds)];
    const out = new Map<string, PushedPeer[]>();
    for (const [from, list] of links) {
      out.set(
        from,
        list.flatMap((l) => {
          const peer = nodes.get(l.toNodeId);
          return peer ? [{ ...peer, allowedIps: l.allowedIps, persistentKeepalive: l.persistentKeepalive }] : [];
        }),
      );
    }
    return out;
  }
}
