/**
 * mesh.generate at a few hundred nodes: 300 nodes, 44,850 pairs, 89,700 links in one job,
 * on SQLite and PostgreSQL. The rows are read back and checked pair by pair against the
 * rules of src/domain/pairs.ts. Its own file so it runs beside the other suites.
 */
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Em } from '../../src/db/orm.js';
import { isUuid } from '../../src/domain/ids.js';
import { linksForPair } from '../../src/domain/pairs.js';

/** One key for both directions of a pair. */
const pairKey = (a: string, b: string) => (a < b ? `${a}:${b}` : `${b}:${a}`);
import { createRepositories, type Repositories } from '../../src/repositories/index.js';
import { LinkRepository } from '../../src/repositories/links.js';
import type { JobContext } from '../../src/jobs/context.js';
import { generateMesh } from '../../src/jobs/processors/mesh.js';
import { DIALECTS } from '../support/db.js';
import { createHarness, type Harness } from '../support/harness.js';

const NODES = 300;
const PAIRS = (NODES * (NODES - 1)) / 2;

interface LinkRow {
  id: string;
  from_node_id: string;
  to_node_id: string;
  link_group_id: string;
  allowed_ips: string[] | string;
  persistent_keepalive: number | null;
}

describe.each(DIALECTS)('mesh.generate at scale on %s', (dialect) => {
  let h: Harness;

  beforeAll(async () => {
    h = await createHarness(dialect, 'mesh');
  });
  afterAll(async () => {
    await h?.close();
  });

  async function addNodes(configId: string, from: number, count: number): Promise<void> {
    for (let i = from; i < from + count; i++) await h.run('node.create', { configId, name: `n${i}`, kind: 'static' });
  }
  async function configWithNodes(name: string, subnet: string, count: number): Promise<string> {
    const { id: configId } = await h.run<{ id: string }>('config.create', { name, subnet });
    await addNodes(configId, 0, count);
    return configId;
  }

  /** Every stored link of a config, straight from the table. */
  async function links(configId: string): Promise<(LinkRow & { allowed_ips: string[] })[]> {
    const rows = await h.uow
      .fork()
      .getConnection()
      .execute<LinkRow[]>(
        'select id, from_node_id, to_node_id, link_group_id, allowed_ips, persistent_keepalive from peer_link where config_id = ?',
        [configId],
      );
    return rows.map((r) => ({ ...r, allowed_ips: typeof r.allowed_ips === 'string' ? (JSON.parse(r.allowed_ips) as string[]) : r.allowed_ips }));
  }

  /**
   * A fresh mesh is written in id order, which is (from, to) order, so each unique index
   * grows at its right edge. Written order: the heap's on PostgreSQL (nothing was deleted
   * in this file, so rows are appended), rowid on SQLite.
   */
  async function expectWrittenInKeyOrder(configId: string): Promise<void> {
    const rows = await h.uow
      .fork()
      .getConnection()
      .execute<{ id: string; from_node_id: string; to_node_id: string }[]>(
        `select id, from_node_id, to_node_id from peer_link where config_id = ? order by ${dialect === 'postgresql' ? 'ctid' : 'rowid'}`,
        [configId],
      );
    const ids = rows.map((r) => r.id);
    expect(ids).toEqual([...ids].sort());
    const pairs = rows.map((r) => `${r.from_node_id}:${r.to_node_id}`);
    expect(pairs).toEqual([...pairs].sort());
  }

  /**
   * Checks the links of a config pair by pair: every two nodes exactly once, both
   * directions sharing a linkGroupId no other pair has, each routing its peer's host
   * address as linksForPair says, distinct uuids. Returns the rows.
   */
  async function expectFullMesh(configId: string, keepalive: number | null) {
    const nodes = await h.uow
      .fork()
      .getConnection()
      .execute<{ id: string; address: string }[]>('select id, address from node where config_id = ?', [configId]);
    const address = new Map(nodes.map((n) => [n.id, n.address]));
    const rows = await links(configId);
    expect(rows).toHaveLength(nodes.length * (nodes.length - 1));

    const byPair = new Map<string, typeof rows>();
    for (const row of rows) {
      const key = pairKey(row.from_node_id, row.to_node_id);
      const pair = byPair.get(key);
      if (pair) pair.push(row);
      else byPair.set(key, [row]);
    }
    expect(byPair.size).toBe((nodes.length * (nodes.length - 1)) / 2);
    const groups = new Set<string>();
    for (const [key, pair] of byPair) {
      const [lo, hi] = key.split(':') as [string, string];
      expect(pair).toHaveLength(2);
      const [a, b] = pair as [LinkRow, LinkRow];
      expect(a.link_group_id).toBe(b.link_group_id);
      groups.add(a.link_group_id);
      const expected = linksForPair(lo, hi, { linkGroupId: a.link_group_id, addressOf: (id) => address.get(id), keepalive });
      const actual = pair.map((l) => ({
        fromNodeId: l.from_node_id,
        toNodeId: l.to_node_id,
        linkGroupId: l.link_group_id,
        allowedIps: l.allowed_ips,
        persistentKeepalive: l.persistent_keepalive,
      }));
      expect(actual.sort((x, y) => (x.fromNodeId < y.fromNodeId ? -1 : 1))).toEqual(expected);
    }
    expect(groups.size).toBe(byPair.size);
    const ids = new Set(rows.map((r) => r.id));
    expect(ids.size).toBe(rows.length);
    for (const id of [...ids, ...groups]) expect(isUuid(id), id).toBe(true);
    expect([...ids].filter((id) => groups.has(id))).toEqual([]);
    return rows;
  }

  it(`links ${NODES} nodes in one job: every pair exactly once, both directions, one group each; a second run creates none`, async () => {
    const configId = await configWithNodes('big', '10.60.0.0/16', NODES);

    expect(await h.run('mesh.generate', { configId })).toEqual({ created: PAIRS });
    await expectWrittenInKeyOrder(configId);
    const rows = await expectFullMesh(configId, 25);
    // UUIDv7, like every other id meshq makes
    expect(rows.every((r) => r.id[14] === '7' && r.link_group_id[14] === '7')).toBe(true);

    expect(await h.run('mesh.generate', { configId })).toEqual({ created: 0 });
    expect(await h.read((r) => r.links.countInConfig(configId))).toBe(PAIRS * 2);
  }, 300_000);

  it('adds only the pairs of nodes that joined since the last run, and leaves existing links as they were', async () => {
    const configId = await configWithNodes('grow', '10.62.0.0/24', 40);
    expect(await h.run('mesh.generate', { configId, persistentKeepalive: 0 })).toEqual({ created: 780 });
    const before = new Map((await links(configId)).map((r) => [r.id, r]));

    await addNodes(configId, 40, 2);
    expect(await h.run('mesh.generate', { configId, persistentKeepalive: 0 })).toEqual({ created: 40 + 41 });

    const after = await expectFullMesh(configId, null);
    const kept = after.filter((r) => before.has(r.id));
    expect(kept).toHaveLength(before.size);
    for (const row of kept) expect(row).toEqual(before.get(row.id));
  });

  it('routes /128 host addresses in an IPv6 config', async () => {
    const configId = await configWithNodes('six', 'fd00:60::/64', 5);
    expect(await h.run('mesh.generate', { configId, persistentKeepalive: 15 })).toEqual({ created: 10 });
    const rows = await expectFullMesh(configId, 15);
    expect(rows.every((r) => r.allowed_ips.length === 1 && r.allowed_ips[0]!.endsWith('/128'))).toBe(true);
  });

  /** generateMesh in a write transaction of its own, with a LinkRepository built with `opts`. */
  /** A job's context for calling a processor directly in a write transaction. */
  const directContext = (em: Em, repos: Repositories): JobContext => ({
    em,
    repos,
    log: pino({ level: 'silent' }),
    config: h.config,
    actor: 'test',
    jobId: 'direct',
    afterCommit: () => undefined,
    enqueue: () => undefined,
    progress: async () => undefined,
  });

  function generateWith(configId: string, opts: ConstructorParameters<typeof LinkRepository>[1]) {
    return h.uow.write(async (tx, handle) => {
      const repos = createRepositories(tx, { serverKey: h.serverKey, tx: handle });
      const links = new LinkRepository(tx, { tx: handle, ...opts });
      // getters run on the repositories object itself (they read its private fields)
      const withLinks = new Proxy(repos, { get: (target, key) => (key === 'links' ? links : Reflect.get(target, key)) });
      return generateMesh({ configId, persistentKeepalive: 25 }, directContext(tx, withLinks));
    });
  }

  const sqlOf = (text: string, params: unknown[] = []) => h.uow.fork().getConnection().execute<Record<string, unknown>[]>(text, params);

  /** peer_link's indexes as the database defines them. */
  const linkIndexes = () =>
    dialect === 'sqlite'
      ? sqlOf("select name, sql from sqlite_master where type = 'index' and tbl_name = 'peer_link' order by name")
      : sqlOf("select indexname, indexdef from pg_indexes where tablename = 'peer_link' order by indexname");

  /**
   * SQLite: a trigger that fails any insert of links made while peer_link has no
   * to_node_id index: it tells whether a run built that index after its rows (large runs),
   * and makes that run fail between the drop and the build. PostgreSQL has no such index
   * (Migration20261202100000_peer_link_to_index), and a run changes none of its indexes.
   */
  async function failWithoutToIndex(on: boolean): Promise<void> {
    if (dialect !== 'sqlite') return;
    await sqlOf(
      on
        ? "create trigger link_needs_to_index before insert on peer_link when not exists (select 1 from sqlite_master where type = 'index' and name = 'peer_link_to_node_id_index') begin select raise(abort, 'to_node_id index absent'); end"
        : 'drop trigger link_needs_to_index',
    );
  }

  it('on SQLite builds the to_node_id index after the rows of a run that adds more than the table holds; a failure on the way leaves indexes and rows as they were', async () => {
    const small = { largeRunRows: 100 };
    const before = await linkIndexes();
    const held = Number((await sqlOf('select count(*) as n from peer_link'))[0]!.n);
    // a mesh of more rows than the table will hold (the tests above left rows in it)
    const nodes = Math.ceil(Math.sqrt(held + 1_000));
    const bigId = await configWithNodes('deferred', '10.63.0.0/16', nodes);
    const smallId = await configWithNodes('kept', '10.64.0.0/24', 20);
    await failWithoutToIndex(true);
    // SQLite: the page cache each run's rows were inserted with (sqliteLargePageCache): the
    // large one only while rows enter the to_node_id index in place.
    const cacheSeen = async () => (await sqlOf('select c from link_cache_seen order by c')).map((r) => Number(r.c));
    if (dialect === 'sqlite') {
      await sqlOf('create table link_cache_seen (c integer primary key)');
      await sqlOf('create trigger link_cache before insert on peer_link begin insert or ignore into link_cache_seen select cache_size from pragma_cache_size; end');
    }
    try {
      // 380 rows, fewer than the table holds: the index stays during the insert
      expect(await generateWith(smallId, small)).toEqual({ created: 190 });
      if (dialect === 'sqlite') {
        expect(await cacheSeen()).toEqual([-65536]);
        await sqlOf('delete from link_cache_seen');
      }
      const heldNow = held + 380;
      // n(n - 1) rows, more than it holds: SQLite drops the index for the insert, and the
      // trigger fails the run before the index is back
      const big = generateWith(bigId, small);
      if (dialect === 'sqlite') {
        await expect(big).rejects.toThrow(/to_node_id index absent/);
        expect(await linkIndexes()).toEqual(before);
        expect(Number((await sqlOf('select count(*) as n from peer_link'))[0]!.n)).toBe(heldNow);
        expect(await sqlOf('pragma integrity_check')).toEqual([{ integrity_check: 'ok' }]);
      } else {
        // PostgreSQL has no to_node_id index and changes none (an index drop would lock
        // out every reader of peer_link)
        expect(JSON.stringify(before)).not.toContain('peer_link_to_node_id_index');
        expect(await big).toEqual({ created: (nodes * (nodes - 1)) / 2 });
        expect(await linkIndexes()).toEqual(before);
      }
    } finally {
      await failWithoutToIndex(false);
    }
    expect(await generateWith(bigId, small)).toEqual({ created: dialect === 'sqlite' ? (nodes * (nodes - 1)) / 2 : 0 });
    expect(await linkIndexes()).toEqual(before);
    if (dialect === 'sqlite') {
      expect(await sqlOf('pragma integrity_check')).toEqual([{ integrity_check: 'ok' }]);
      // the index built after the rows: they went in at SQLite's default, as does everything after
      expect(await cacheSeen()).toEqual([-2000]);
      expect(await sqlOf('pragma cache_size')).toEqual([{ cache_size: -2000 }]);
      await sqlOf('drop trigger link_cache');
    }
    await expectFullMesh(bigId, 25);
    // the rebuilt index serves the node-delete cascade as before: a node's links go in both directions
    const [gone] = await sqlOf('select id from node where config_id = ? order by id limit 1', [bigId]);
    await h.run('node.delete', { id: gone!.id });
    expect(await h.read((r) => r.links.countInConfig(bigId))).toBe((nodes - 1) * (nodes - 2));
    // a second run on the existing mesh adds nothing
    expect(await generateWith(bigId, small)).toEqual({ created: 0 });
  }, 120_000);

  it('keeps the inserted links out of the identity map', async () => {
    const configId = await configWithNodes('managed', '10.61.0.0/24', 50);
    let em: Em | undefined;

    const result = await h.uow.write(async (tx) => {
      em = tx;
      return generateMesh({ configId, persistentKeepalive: 25 }, directContext(tx, createRepositories(tx, { serverKey: h.serverKey })));
    });

    expect(result).toEqual({ created: 1225 });
    // the config row and the audit record; no PeerLink entities
    const managed = em!.getUnitOfWork().getIdentityMap().values();
    expect(managed.length).toBeLessThan(10);
    expect(await h.read((r) => r.links.countInConfig(configId))).toBe(2450);
  });
});
