/** The peer links of a mesh: one row per direction of a pair. */
import type { FilterQuery } from '@mikro-orm/core';
import type { Em } from '../db/orm.js';
import { PeerLink } from '../domain/entities/mesh.js';
import { newId } from '../domain/ids.js';
import { idCursor, pageLimit, toPage, type Page, type PageRequest } from '../domain/paging.js';
import type { MeshLinkIds, PeerLinkDraft } from '../domain/pairs.js';
import { boundSql } from '../db/sql.js';

/**
 * mesh.generate's statement, per dialect; parameters: config id, id prefix, id base,
 * the range of the pairs' higher node position j (from, to), keepalive. `n` is the pair's first counter, base + 3 * ordinal; the lo -> hi link takes
 * n, hi -> lo n + 1, the link group n + 2 (meshLinkIds). The pair ordinal j(j-1)/2 + i
 * needs no node count, and row_number over unique ids is the same wherever the CTE is
 * read. Two anti-joins on the (from, to) unique index skip existing pairs.
 */
const missingPairsInsert = (d: { id: (n: string) => string; route: (address: string) => string }): string => `
with m as (
  select id, address, config_id, row_number() over (order by id) - 1 as i from node where config_id = ?
), p as (
  select a.config_id, a.id as lo, b.id as hi, a.address as lo_address, b.address as hi_address,
    cast(? as text) as prefix, cast(? as bigint) + 3 * ((b.i * (b.i - 1)) / 2 + a.i) as n
  from m a join m b on a.i < b.i
  where b.i >= cast(? as bigint) and b.i < cast(? as bigint)
    and not exists (select 1 from peer_link l where l.config_id = a.config_id and l.from_node_id = a.id and l.to_node_id = b.id)
    and not exists (select 1 from peer_link l where l.config_id = a.config_id and l.from_node_id = b.id and l.to_node_id = a.id)
)
insert into peer_link (id, config_id, from_node_id, to_node_id, link_group_id, allowed_ips, persistent_keepalive)
select ${d.id('n + dir.d')}, p.config_id,
  case when dir.d = 0 then p.lo else p.hi end,
  case when dir.d = 0 then p.hi else p.lo end,
  ${d.id('n + 2')},
  ${d.route('case when dir.d = 0 then p.hi_address else p.lo_address end')},
  cast(? as integer)
from p cross join (select 0 as d union all select 1 as d) as dir`;

const MISSING_PAIRS_INSERT = {
  sqlite: missingPairsInsert({
    id: (n) => `p.prefix || printf('%012x', ${n})`,
    route: (a) => `json_array(${a} || case when instr(${a}, ':') > 0 then '/128' else '/32' end)`,
  }),
  postgresql: missingPairsInsert({
    id: (n) => `cast(p.prefix || lpad(to_hex(${n}), 12, '0') as uuid)`,
    route: (a) => `jsonb_build_array(${a} || case when strpos(${a}, ':') > 0 then '/128' else '/32' end)`,
  }),
} as const;

/** About this many candidate pairs per statement on SQLite (see insertMissingPairs). */
const PAIRS_PER_SQLITE_STATEMENT = 20_000;

/**
 * Ranges [from, to) of the higher position j over n nodes, each holding about `size`
 * pairs (position j pairs with the j nodes before it).
 */
function* pairSlices(n: number, size: number): Generator<[number, number]> {
  let from = 1;
  while (from < n) {
    let to = from;
    let pairs = 0;
    while (to < n && (pairs === 0 || pairs + to <= size)) pairs += to++;
    yield [from, to];
    from = to;
  }
}

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
   * Every missing pair of a config, both directions, in one INSERT ... SELECT: the
   * database pairs the config's nodes (i < j by position in id order), skips pairs linked
   * in either direction, and writes two rows per pair. Nothing crosses to JavaScript, so
   * memory is flat in the number of nodes. Ids and counters: meshLinkIds
   * (src/domain/pairs.ts). Each direction routes its peer's host address (/32 or /128,
   * as linksForPair). Returns how many pairs it added.
   */
  async insertMissingPairs(configId: string, ids: MeshLinkIds, persistentKeepalive: number | null): Promise<number> {
    const sql = boundSql(this.em);
    const insert = async (from: number, to: number) =>
      (await sql.query(MISSING_PAIRS_INSERT[sql.dialect], [configId, ids.prefix, ids.base, from, to, persistentKeepalive])).affected / 2;
    if (sql.dialect === 'sqlite') {
      // better-sqlite3 runs a statement to completion on the worker's event loop, so the
      // pairs go in slices of the higher node's position: between slices the loop renews
      // BullMQ's job lock and serves the MQTT link. Same transaction, same ids.
      const { rows } = await sql.query<{ n: number }>('select count(*) as n from node where config_id = ?', [configId]);
      let created = 0;
      for (const [from, to] of pairSlices(Number(rows[0]!.n), PAIRS_PER_SQLITE_STATEMENT)) created += await insert(from, to);
      return created;
    }
    // PostgreSQL estimates one row for a CTE scan, and with that estimate plans the
    // anti-joins as nested loops that probe peer_link once per pair (while the statement
    // inserts into it): quadratic work. Without nested loops where another join exists,
    // they become one hash or merge join each. The planner then prices the one join that
    // must stay a nested loop (i < j) as disabled, which would trigger JIT compilation
    // that costs more than it saves here. Both settings are restored for the rest of the
    // transaction.
    const { rows } = await sql.query<{ nestloop: string; jit: string }>("select current_setting('enable_nestloop') as nestloop, current_setting('jit') as jit");
    const previous = rows[0]!;
    await sql.query("select set_config('enable_nestloop', 'off', true), set_config('jit', 'off', true)");
    // Not restored after a failure: the transaction is rolled back, and a statement
    // sent now would only fail again and hide the first error.
    const created = await insert(0, Number.MAX_SAFE_INTEGER);
    await sql.query("select set_config('enable_nestloop', ?, true), set_config('jit', ?, true)", [previous.nestloop, previous.jit]);
    return created;
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

  /** The two directions of one pair (link.create); returns their ids in the same order. */
  async insertPair(configId: string, forward: PeerLinkDraft, reverse: PeerLinkDraft): Promise<[string, string]> {
    const ids: [string, string] = [newId(), newId()];
    await this.em.insertMany(
      PeerLink,
      [forward, reverse].map((l, i) => ({
        id: ids[i]!,
        config: configId,
        fromNode: l.fromNodeId,
        toNode: l.toNodeId,
        linkGroupId: l.linkGroupId,
        allowedIps: l.allowedIps,
        persistentKeepalive: l.persistentKeepalive,
      })),
    );
    return ids;
  }

  /** A link between the two nodes in either direction (a pair exists once), if any. */
  async between(a: string, b: string): Promise<LinkView | undefined> {
    const row = await this.em.findOne(PeerLink, { $or: [{ fromNode: a, toNode: b }, { fromNode: b, toNode: a }] });
    return row ? linkView(row) : undefined;
  }

  /** Both directions of a pair: the links sharing a linkGroupId. Returns how many went. */
  async deletePair(linkGroupId: string): Promise<number> {
    return this.em.nativeDelete(PeerLink, { linkGroupId });
  }
}
