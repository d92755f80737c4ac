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

/** Ordered by link id within each node, as every push and wireguard.conf has always listed them. */
const PEERS =
  'select l.from_node_id, p.id, p.name, p.public_key, p.endpoint, coalesce(p.listen_port, c.listen_port) as listen_port, l.allowed_ips, l.persistent_keepalive' +
  ' from peer_link l join node p on p.id = l.to_node_id join mesh_config c on c.id = p.config_id where l.from_node_id in (?list) order by l.from_node_id, l.id';

const PEER_COUNTS = 'select from_node_id, count(*) as peers from peer_link where from_node_id in (?list) group by from_node_id';

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
    const { rows } = await this.sql.query<{ from_node_id: string; peers: number | string }>(listText(PEER_COUNTS, nodeIds.length), nodeIds);
    return new Map(rows.map((r) => [r.from_node_id, Number(r.peers)]));
  }

  /**
   * The peers of each of these nodes: one per outgoing link, in link id order. A node
   * without links has no entry. Links cascade with their nodes, so every link names a peer.
   */
  async peers(nodeIds: readonly string[]): Promise<Map<string, PushedPeer[]>> {
    const out = new Map<string, PushedPeer[]>();
    if (nodeIds.length === 0) return out;
    const { rows } = await this.sql.query<Record<string, unknown>>(listText(PEERS, nodeIds.length), nodeIds);
    for (const r of rows) {
      const from = String(r.from_node_id);
      let list = out.get(from);
      if (!list) out.set(from, (list = []));
      list.push({
        nodeId: String(r.id),
        name: String(r.name),
        publicKey: String(r.public_key),
        endpoint: r.endpoint == null ? null : String(r.endpoint),
        listenPort: Number(r.listen_port),
        allowedIps: json<string[]>(r.allowed_ips),
        persistentKeepalive: r.persistent_keepalive == null ? null : Number(r.persistent_keepalive),
      });
    }
    return out;
  }
}
