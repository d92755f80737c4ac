/**
 * What config pushes are made of, read set-based: the interfaces of many nodes in one
 * query and the peers of many nodes in one query, whatever the mesh size. Callers page
 * the nodes they ask for (`NodeSyncRepository.pendingPushesWithPeers` says how many link
 * rows a page will bring), so memory follows the page, not the mesh.
 */
import type { Em } from '../db/orm.js';
import { boundSql, type BoundSql } from '../db/sql.js';
import type { TransactionHandle } from '../db/unit-of-work.js';
import { decryptSecret } from '../domain/secrets.js';
import type { AwgParams, TunnelProtocol } from '../domain/validation.js';
import { PushTexts, type PeerLinkRow, type PeerList, type PeerNode } from './peer-list-json.js';


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

/**
 * A link's allowed IPs as JSON.stringify writes them. jsonb's text puts a space after each
 * comma between elements, so only a list of one (every link mesh.generate writes) can be
 * sent as it is; longer ones are written element by element (a jsonb string's text is
 * escaped as JSON.stringify escapes it).
 */
const ALLOWED_IPS_JSON =
  "case when jsonb_array_length(k.allowed_ips) < 2 then k.allowed_ips::text else (select concat('[', string_agg(e::text, ',' order by o), ']')" +
  ' from jsonb_array_elements(k.allowed_ips) with ordinality a(e, o)) end';

/**
 * PostgreSQL writes each page node's `peers` array itself, the text PushTexts writes
 * (src/repositories/peer-list-json.ts; test/integration/push-pages.test.ts holds the
 * two equal): each peer's part once per page (`peer`), then per node its links in link id
 * order, joined. The worker gets one text per node instead of a row per link to parse,
 * sort and write again. Per node a lateral subquery: its links through the from_node_id
 * index, hashed against the page's peers (built once), sorted in memory (one node's links,
 * not the page's, so the sort never spills).
 */
const PEER_LISTS =
  'with page as (select id, config_id from node where id in (?list)),' +
  ` peer as materialized (select p.id, concat('{"nodeId":"', p.id, '","name":', to_json(p.name), ',"publicKey":', to_json(p.public_key),` +
  ` ',"endpoint":', coalesce(to_json(p.endpoint)::text, 'null'), ',"listenPort":', coalesce(p.listen_port, c.listen_port), ',"allowedIps":') as head` +
  ' from node p join mesh_config c on c.id = p.config_id where p.config_id in (select config_id from page))' +
  ' select n.id, l.json, l.peers from page n cross join lateral (' +
  `select string_agg(concat(peer.head, ${ALLOWED_IPS_JSON}, ',"persistentKeepalive":', coalesce(k.persistent_keepalive::text, 'null'), '}'), ',' order by k.id) as json, count(*) as peers` +
  ' from (select id, to_node_id, allowed_ips, persistent_keepalive from peer_link where from_node_id = n.id offset 0) k join peer on peer.id = k.to_node_id) l';

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

  /**
   * Each of these nodes' `peers` array as the push writes it, and how many peers it lists
   * (PushTexts' text; nodes without links may be left out). On PostgreSQL the database
   * writes it (PEER_LISTS); SQLite runs on the worker's own thread, where a statement
   * writing a page's JSON would hold the event loop for all of it, so its rows are read
   * and written here as before.
   */
  async peerLists(nodeIds: readonly string[]): Promise<Map<string, PeerList>> {
    const out = new Map<string, PeerList>();
    if (nodeIds.length === 0) return out;
    if (this.sql.dialect === 'sqlite') {
      const texts = new PushTexts(await this.peerNodes(nodeIds));
      for (const [from, links] of await this.links(nodeIds)) out.set(from, texts.peers(links));
      return out;
    }
    const text = listText(PEER_LISTS, nodeIds.length);
    const rows = await this.withIndexPlan(() => this.sql.query<{ id: string; json: string | null; peers: number | string }>(text, nodeIds));
    for (const r of rows) out.set(r.id, r.json === null ? { json: '[]', count: 0 } : { json: `[${r.json}]`, count: Number(r.peers) });
    return out;
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
        ? await this.withIndexPlan(() => this.sql.query<Record<string, unknown>>(text, nodeIds))
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

  /**
   * Runs a read of a page's links with sequential scans and JIT off (transaction-local,
   * put back after it; a failed statement aborts the transaction and the settings go
   * with it: no finally needed). Sequential scans: see links. JIT: with them off, a
   * page's plan is priced high enough to be compiled, which costs more than it saves.
   */
  private async withIndexPlan<R>(run: () => Promise<{ rows: R[] }>): Promise<R[]> {
    const { rows } = await this.sql.query<{ seqscan: string; jit: string }>(
      "select s.seqscan, s.jit, set_config('enable_seqscan', 'off', true), set_config('jit', 'off', true)" +
        " from (select current_setting('enable_seqscan') as seqscan, current_setting('jit') as jit offset 0) s",
    );
    const out = (await run()).rows;
    await this.sql.query("select set_config('enable_seqscan', ?, true), set_config('jit', ?, true)", [rows[0]!.seqscan, rows[0]!.jit]);
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
