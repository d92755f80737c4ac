/** The peer links of a mesh: one row per direction of a pair. */
import type { FilterQuery } from '@mikro-orm/core';
import type { Em } from '../db/orm.js';
import { PeerLink } from '../domain/entities/mesh.js';
import { newId } from '../domain/ids.js';
import { idCursor, pageLimit, toPage, type Page, type PageRequest } from '../domain/paging.js';
import type { MeshLinkIds, PeerLinkDraft } from '../domain/pairs.js';
import { boundSql, type BoundSql } from '../db/sql.js';
import { withIndexBuiltAfter } from '../db/sqlite-deferred-index.js';
import type { TransactionHandle } from '../db/unit-of-work.js';

/**
 * mesh.generate's statement, per dialect; parameters: id prefix, from base, to base
 * (meshLinkIds), config id (and again for the existing links, PostgreSQL's `postgresql`
 * only), keepalive, the range [from, to) of the `from` node's position. Nodes are
 * numbered by id (i). The statement writes one row per direction, ordered by (from, to)
 * position. Each node's pieces of the ids are built once, in `m`: its `from` piece (the
 * prefix and six hex digits of fromBase + i), its link piece (six of toBase + 2i) and its
 * group piece (toBase + 2i + 1); a row's id is the from node's `from` piece followed by
 * the to node's link piece, and the pair's shared link group id is the lower node's `from`
 * piece followed by the higher node's group piece (meshLinkIds). A row is then two
 * concatenations, no arithmetic on it. Id order is (from_node_id, to_node_id) order, so
 * the primary key and the (from, to) unique index, the two indexes every row enters, are
 * filled at their right edge instead of at random places, and each node's route is built
 * once, not once per row. That holds only if the `from` node is the outer loop of the
 * pair join (`pairs`): SQLite keeps the written order of a cross join; PostgreSQL chose
 * `to` as the outer loop, writing rows n ids apart, unless the inner side is a lateral
 * subquery it cannot flatten. A row is skipped when its pair exists in either direction,
 * so a pair is always written whole.
 */
const missingPairsInsert = (d: {
  hex6: (value: string) => string;
  id: (text: string) => string;
  route: (address: string) => string;
  missing: (from: string, to: string) => string;
  prelude: string;
  pairs: string;
}): string => `
with c as materialized (
  select cast(? as text) as prefix, cast(? as bigint) as from_base, cast(? as bigint) as to_base
), k as (
  select id, config_id, row_number() over (order by id) - 1 as i,
    ${d.route("address || case when instr(address, ':') > 0 then '/128' else '/32' end")} as route
  from node where config_id = ?
), m as materialized (
  select k.id, k.config_id, k.i, k.route, c.prefix || ${d.hex6('c.from_base + k.i')} as from_piece,
    ${d.hex6('c.to_base + 2 * k.i')} as link_piece, ${d.hex6('c.to_base + 2 * k.i + 1')} as group_piece
  from c cross join k
)${d.prelude}
insert into peer_link (id, config_id, from_node_id, to_node_id, link_group_id, allowed_ips, persistent_keepalive)
select ${d.id('f.from_piece || t.link_piece')}, f.config_id, f.id, t.id,
  case when f.i < t.i then ${d.id('f.from_piece || t.group_piece')} else ${d.id('t.from_piece || f.group_piece')} end,
  t.route, cast(? as integer)
from c cross join m f ${d.pairs}
where f.i >= cast(? as bigint) and f.i < cast(? as bigint)
  and ${d.missing('f.id', 't.id')} and ${d.missing('t.id', 'f.id')}`;

/** How each dialect builds a row's parts. */
const SQLITE = {
  hex6: (value: string) => `printf('%06x', ${value})`,
  id: (text: string) => text,
  route: (a: string) => `json_array(${a})`,
  prelude: '',
  pairs: 'join m t on t.i <> f.i',
};
const POSTGRESQL = {
  hex6: (value: string) => `lpad(to_hex(${value}), 6, '0')`,
  id: (text: string) => `cast(${text} as uuid)`,
  route: (a: string) => `jsonb_build_array(${a.replace('instr(', 'strpos(')})`,
  prelude: '',
  // `offset 0` keeps the subquery a nested loop's parameterised inner side.
  pairs: 'cross join lateral (select * from m t where t.i <> f.i offset 0) t',
};

const MISSING_PAIRS_INSERT = {
  // The unique (from, to) index answers each probe. The statement runs in slices of
  // `from` (insertMissingPairs): a reverse direction an earlier slice of this run wrote
  // (its id starts with the run's prefix) must not count as an existing pair.
  sqlite: missingPairsInsert({
    ...SQLITE,
    missing: (from, to) =>
      `not exists (select 1 from peer_link l where l.from_node_id = ${from} and l.to_node_id = ${to} and substr(l.id, 1, length(c.prefix)) <> c.prefix)`,
  }),
  // A config none of whose nodes has a link yet (the first run): every pair is missing, so
  // nothing is probed. The probes cost about as much as the insert itself: the reverse
  // direction of half the pairs is found (written by an earlier slice) and its row read
  // for its id.
  sqliteFirstRun: missingPairsInsert({ ...SQLITE, missing: () => '1' }),
  // The config's existing links once, hashed (see insertMissingPairs for the plan).
  postgresql: missingPairsInsert({
    ...POSTGRESQL,
    missing: (from, to) => `not exists (select 1 from e where e.f = ${from} and e.t = ${to})`,
    prelude: `, e as materialized (
  select from_node_id as f, to_node_id as t from peer_link where config_id = ?
)`,
  }),
  // A config without links (a first run): nothing to probe (see insertMissingPairs).
  postgresqlFirstRun: missingPairsInsert({ ...POSTGRESQL, missing: () => 'true' }),
} as const;

/** About this many link rows per statement on SQLite (see insertMissingPairs). */
const ROWS_PER_SQLITE_STATEMENT = 50_000;

/**
 * SQLite: the index every generated row enters at a scattered place (one of n), built after
 * the insert rather than maintained during it (src/db/sqlite-deferred-index.ts).
 */
const SCATTERED_INDEX = 'peer_link_to_node_id_index';

/**
 * SQLite: link rows a mesh.generate may add at least to count as a large run, whose commit
 * leaves its WAL checkpoint to a thread and which builds the scattered index after the
 * insert when it also adds more rows than the table holds (the build reads every row).
 * Below it the index's upkeep and the checkpoint are small, and a build would be most of
 * the job.
 */
const LARGE_RUN_ROWS = 40_000;

export interface LinkRepositoryOptions {
  /** The write transaction, when there is one (a large run asks it to checkpoint after commit). */
  tx?: TransactionHandle;
  /** Least link rows to add for a large run on SQLite (tests make it small). */
  largeRunRows?: number;
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

/** Pairs added at once above which mesh.generate refreshes peer_link's planner statistics. */
const ANALYZE_AFTER_PAIRS = 5_000;

/** The statistics target of that refresh (see insertMissingPairs). */
const ANALYZE_STATISTICS_TARGET = 10;

export class LinkRepository {
  private readonly largeRunRows: number;
  private readonly tx: TransactionHandle | undefined;

  constructor(
    private readonly em: Em,
    opts: LinkRepositoryOptions = {},
  ) {
    this.largeRunRows = opts.largeRunRows ?? LARGE_RUN_ROWS;
    this.tx = opts.tx;
  }

  /**
   * Every missing pair of a config, both directions, set-based: the database numbers the
   * config's nodes, writes a row for every ordered pair of them whose pair is linked in
   * neither direction, and draws the ids (meshLinkIds, src/domain/pairs.ts). Nothing
   * crosses to JavaScript, so memory is flat in the number of nodes. Each direction
   * routes its peer's host address (/32 or /128, as linksForPair). Returns how many pairs
   * it added.
   */
  async insertMissingPairs(configId: string, ids: MeshLinkIds, persistentKeepalive: number | null): Promise<number> {
    const sql = boundSql(this.em);
    if (sql.dialect === 'sqlite') return this.insertMissingPairsSqlite(sql, configId, ids, persistentKeepalive);
    // PostgreSQL estimates one row for a CTE scan and would then probe the existing links
    // with nested loops or sort a million rows for a merge join; with both off where
    // another join exists, each anti-join is a hash join against the config's links. The
    // one join that must stay a nested loop (t.i <> f.i) is then priced as disabled, which
    // would trigger JIT compilation that costs more than it saves here. The settings are
    // restored for the rest of the transaction. A config without links (a first run) is
    // written without the anti-joins: every pair is missing, and probing an empty hash
    // table still passes each row through two joins.
    const { rows } = await sql.query<{ nestloop: string; mergejoin: string; jit: string; target: string; linked: boolean }>(
      "select current_setting('enable_nestloop') as nestloop, current_setting('enable_mergejoin') as mergejoin, current_setting('jit') as jit," +
        " current_setting('default_statistics_target') as target, exists (select 1 from peer_link where config_id = ?) as linked",
      [configId],
    );
    const previous = rows[0]!;
    await sql.query("select set_config('enable_nestloop', 'off', true), set_config('enable_mergejoin', 'off', true), set_config('jit', 'off', true)");
    // Not restored after a failure: the transaction is rolled back, and a statement
    // sent now would only fail again and hide the first error.
    const [statement, params] = previous.linked
      ? [MISSING_PAIRS_INSERT.postgresql, [ids.prefix, ids.fromBase, ids.toBase, configId, configId, persistentKeepalive, 0, Number.MAX_SAFE_INTEGER]]
      : [MISSING_PAIRS_INSERT.postgresqlFirstRun, [ids.prefix, ids.fromBase, ids.toBase, configId, persistentKeepalive, 0, Number.MAX_SAFE_INTEGER]];
    const created = (await sql.query(statement, params)).affected / 2;
    // Statistics for the rows just written, in this transaction (ANALYZE counts them and
    // its results commit with them): autovacuum would only get to it later, and until
    // then the readers of the new links (the push fan-out right after commit) would be
    // planned for an empty table. ANALYZE samples 300 rows per unit of statistics target
    // from as many pages: at the default target that is every page of a full mesh of
    // 1,000 nodes. A small target reads a tenth of them and still gives the table's size
    // and each node column's distinct count, which is what those readers are planned by.
    // These statistics stay until the table is analyzed again (autovacuum, once enough
    // rows changed since, does it at the configured target).
    const analyze = created >= ANALYZE_AFTER_PAIRS;
    await sql.query(
      "select set_config('enable_nestloop', ?, true), set_config('enable_mergejoin', ?, true), set_config('jit', ?, true), set_config('default_statistics_target', ?, true)",
      [previous.nestloop, previous.mergejoin, previous.jit, analyze ? String(ANALYZE_STATISTICS_TARGET) : previous.target],
    );
    if (analyze) {
      await sql.query('analyze peer_link');
      await sql.query("select set_config('default_statistics_target', ?, true)", [previous.target]);
    }
    return created;
  }

  /**
   * better-sqlite3 runs a statement to completion on the calling thread, so the rows go in
   * slices of the `from` node's position, with a turn of the event loop between them: the
   * worker renews BullMQ's job lock and serves the MQTT link. Same transaction, same ids
   * (the numbering is the same in every slice). A config whose nodes have no link yet
   * skips the existing-pair probes. A large run (largeRun) checkpoints after its commit
   * in a thread, and builds the to_node_id index after its rows are in when it adds more
   * rows than the table holds, or else runs with a large page cache.
   */
  private async insertMissingPairsSqlite(sql: BoundSql, configId: string, ids: MeshLinkIds, persistentKeepalive: number | null): Promise<number> {
    const { rows } = await sql.query<{ n: number; linked: number }>(
      'select count(*) as n, exists (select 1 from node x join peer_link l on l.from_node_id = x.id where x.config_id = ?) as linked from node where config_id = ?',
      [configId, configId],
    );
    const n = Number(rows[0]!.n);
    const linked = Number(rows[0]!.linked) !== 0;
    // Any existing pair has a row from one of the config's nodes (both ends are its nodes),
    // so without such rows every probe would find nothing.
    const statement = linked ? MISSING_PAIRS_INSERT.sqlite : MISSING_PAIRS_INSERT.sqliteFirstRun;
    const insert = async () => {
      const step = Math.max(1, Math.floor(ROWS_PER_SQLITE_STATEMENT / Math.max(1, n - 1)));
      let rowsAdded = 0;
      for (let from = 0; from < n; from += step) {
        const params = [ids.prefix, ids.fromBase, ids.toBase, configId, persistentKeepalive, from, from + step];
        rowsAdded += (await sql.query(statement, params)).affected;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      return rowsAdded / 2;
    };
    const large = await this.largeRun(sql, configId, n, linked);
    if (large) this.tx?.checkpointAfterCommit();
    if (large === 'build index after') return withIndexBuiltAfter(sql, SCATTERED_INDEX, insert);
    // The rows enter the scattered index in place: its leaf pages in use at once outgrow the
    // default page cache. A first run (index built after) is faster at the default.
    if (large) this.tx?.largePageCache();
    return insert();
  }

  /**
   * Whether a run over n nodes is large: it adds at least largeRunRows rows; and whether it
   * adds more than peer_link holds, so that the scattered index is built after the insert
   * (the build sorts every row of the table, the upkeep it saves is paid by the added rows
   * only). The rows to add are n(n - 1) less the config's links (counted through the
   * config_id index when there are any); the table's rows are bounded by its largest rowid,
   * read from the end of the table's b-tree (SQLite numbers rows upwards, so it is never
   * less than the count).
   */
  private async largeRun(sql: BoundSql, configId: string, n: number, linked: boolean): Promise<false | 'large' | 'build index after'> {
    const most = n * (n - 1);
    if (most < this.largeRunRows) return false;
    const held = async (text: string, params: string[] = []) => Number((await sql.query<{ n: number }>(text, params)).rows[0]!.n);
    const toAdd = most - (linked ? await held('select count(*) as n from peer_link where config_id = ?', [configId]) : 0);
    if (toAdd < this.largeRunRows) return false;
    return toAdd > (await held('select coalesce(max(rowid), 0) as n from peer_link')) ? 'build index after' : 'large';
  }

  async get(id: string): Promise<LinkView | undefined> {
    const row = await this.em.findOne(PeerLink, { id });
    return row ? linkView(row) : undefined;
  }

  async countInConfig(configId: string): Promise<number> {
    return this.em.count(PeerLink, { config: configId });
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

  /**
   * Both directions of a pair: the links between the two nodes that share the link's
   * linkGroupId, found through the (from, to) unique index (link_group_id has no index of
   * its own: every mesh.generate row would pay for one). Returns how many went.
   */
  async deletePair(link: { fromNodeId: string; toNodeId: string; linkGroupId: string }): Promise<number> {
    const { fromNodeId: a, toNodeId: b, linkGroupId } = link;
    return this.em.nativeDelete(PeerLink, { linkGroupId, $or: [{ fromNode: a, toNode: b }, { fromNode: b, toNode: a }] });
  }
}
