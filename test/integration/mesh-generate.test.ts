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
import { createRepositories } from '../../src/repositories/index.js';
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

  it('keeps the inserted links out of the identity map', async () => {
    const configId = await configWithNodes('managed', '10.61.0.0/24', 50);
    let em: Em | undefined;

    const result = await h.uow.write(async (tx) => {
      em = tx;
      const ctx: JobContext = {
        em: tx,
        repos: createRepositories(tx, { serverKey: h.serverKey }),
        log: pino({ level: 'silent' }),
        config: h.config,
        actor: 'test',
        jobId: 'direct',
        afterCommit: () => undefined,
        enqueue: () => undefined,
        progress: async () => undefined,
      };
      return generateMesh({ configId, persistentKeepalive: 25 }, ctx);
    });

    expect(result).toEqual({ created: 1225 });
    // the config row and the audit record; no PeerLink entities
    const managed = em!.getUnitOfWork().getIdentityMap().values();
    expect(managed.length).toBeLessThan(10);
    expect(await h.read((r) => r.links.countInConfig(configId))).toBe(2450);
  });
});
