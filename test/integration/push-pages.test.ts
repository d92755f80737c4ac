/**
 * What a push batch's page reads, on both dialects.
 *
 * The take: the oldest requests in order with their nodes' link counts, counted only up
 * to the first request past the page's budget of link rows.
 *
 * The peer lists: a push's `peers` array is written as text, not by JSON.stringify of objects: in the
 * page query on PostgreSQL (PEER_LISTS in src/repositories/push-content.ts), in
 * JavaScript on SQLite (src/repositories/peer-list-json.ts). Either way it must be
 * exactly the text JSON.stringify writes for the peers as `peers()` reads them (what
 * wireguard.conf lists), or agents would parse something else and every recorded content
 * hash would change. Shown here with the strings that JSON escapes (quotes, backslashes,
 * control characters, characters outside ASCII and the BMP), allowed IPs of none, one and
 * several entries (one with a quote in it), a missing endpoint and keepalive, a node's own
 * listen port, a node without links and a page spanning two configs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EMPTY_PEER_LIST } from '../../src/repositories/peer-list-json.js';
import { createRepositories } from '../../src/repositories/index.js';
import { DIALECTS } from '../support/db.js';
import { createHarness, type Harness } from '../support/harness.js';

const TRICKY_NAMES = ['say "hi"', 'back\\slash', 'line\nbreak\ttab\u0001\u001f\u007f', 'ç-ü 😀 \u2028', '</script>'];

describe.each(DIALECTS)('push pages on %s', (dialect) => {
  let h: Harness;
  const nodeIds: string[] = [];
  let loneId: string;

  const execute = (sql: string, params: unknown[]) => h.uow.fork().getConnection().execute(sql, params);
  /** JSON as the column takes it: text on both dialects (cast to jsonb by PostgreSQL). */
  const jsonParam = (sql: string) => (dialect === 'postgresql' ? sql.replace('?', 'cast(? as jsonb)') : sql);

  beforeAll(async () => {
    h = await createHarness(dialect, 'push_pages');
    for (const [config, subnet, count] of [
      ['lists-a', '10.63.0.0/24', TRICKY_NAMES.length],
      ['lists-b', '10.64.0.0/24', 2],
    ] as const) {
      const { id: configId } = await h.run<{ id: string }>('config.create', { name: config, subnet });
      for (let i = 0; i < count; i++) {
        const endpoint = i % 2 === 0 ? { endpoint: `[2001:db8::${i + 1}]:51820` } : {};
        nodeIds.push((await h.run<{ id: string }>('node.create', { configId, name: `${config}-n${i}`, kind: 'dynamic', ...endpoint })).id);
      }
      await h.run('mesh.generate', { configId });
      if (config === 'lists-b') loneId = (await h.run<{ id: string }>('node.create', { configId, name: 'lone', kind: 'dynamic' })).id;
    }
    // What the API's validation keeps out still has to come out right: written directly.
    for (const [i, name] of TRICKY_NAMES.entries()) await execute('update node set name = ? where id = ?', [name, nodeIds[i]]);
    await execute('update node set listen_port = ? where id = ?', [51999, nodeIds[1]]);
    const [a, b, c] = nodeIds;
    await execute(jsonParam('update peer_link set allowed_ips = ? where from_node_id = ? and to_node_id = ?'), [JSON.stringify(['10.63.0.2/32', 'fd00::2/128', '10.99.0.0/16']), a, b]);
    await execute(jsonParam('update peer_link set allowed_ips = ? where from_node_id = ? and to_node_id = ?'), [JSON.stringify([]), a, c]);
    await execute(jsonParam('update peer_link set allowed_ips = ? where from_node_id = ? and to_node_id = ?'), [JSON.stringify(['a "quoted" \\ one\n', '10.63.0.1/32']), b, a]);
    await execute('update peer_link set persistent_keepalive = ? where from_node_id = ?', [25, b]);
  });

  afterAll(async () => {
    await h?.close();
  });

  it('the take lists the oldest requests with their link counts up to the first past the budget, and how many are pending', async () => {
    const page = [...nodeIds, loneId];
    const counts = await h.uow.write(async (em, tx) => createRepositories(em, { serverKey: h.serverKey, tx }).pushContent.peers(page));
    const count = (id: string) => counts.get(id)?.length ?? 0;
    // One moment for all: the requests are in node id order.
    const ordered = [...page].sort();
    const sync = () => createRepositories(h.uow.fork(), { serverKey: h.serverKey }).nodeSync;
    expect(await sync().requestPushesForNew(page, new Date('2026-12-01T00:00:00Z'))).toBe(page.length);
    for (const [limit, budget] of [
      [128, 1_000_000],
      [128, 6],
      [128, 1],
      [3, 1_000_000],
    ] as const) {
      const expected: { nodeId: string; seq: number; resend: boolean; peers: number }[] = [];
      let before = 0;
      for (const nodeId of ordered.slice(0, limit)) {
        if (expected.length > 0 && before >= budget) break;
        expected.push({ nodeId, seq: 1, resend: false, peers: count(nodeId) });
        before += count(nodeId);
      }
      expect(await sync().pendingPushesWithPeers(limit, budget), `${limit}, ${budget}`).toEqual({ requests: expected, pending: Math.min(limit, page.length) });
    }
    // The budget cut somewhere: a page of this mesh can stop before the end.
    expect((await sync().pendingPushesWithPeers(128, 6)).requests.length).toBeLessThan(page.length);
    await h.uow.write((em, tx) => createRepositories(em, { serverKey: h.serverKey, tx }).nodeSync.settlePushes(ordered.map((nodeId) => ({ nodeId, seq: 1, resend: false }))));
    expect(await sync().pendingPushesWithPeers(128, 6)).toEqual({ requests: [], pending: 0 });
  });

  it('the peer lists are the text JSON.stringify writes for the peers, in link order, with their count', async () => {
    const page = [...nodeIds, loneId];
    const { lists, peers } = await h.uow.write(async (em, tx) => {
      const content = createRepositories(em, { serverKey: h.serverKey, tx }).pushContent;
      return { lists: await content.peerLists(page), peers: await content.peers(page) };
    });
    for (const id of page) {
      const expected = peers.get(id) ?? [];
      const list = lists.get(id) ?? EMPTY_PEER_LIST;
      expect(list.json, id).toBe(JSON.stringify(expected));
      expect(list.count).toBe(expected.length);
    }
    // The cases above were all there to be written.
    const all = [...peers.values()].flat();
    expect(all.map((p) => p.name)).toEqual(expect.arrayContaining(TRICKY_NAMES));
    expect(all.map((p) => p.allowedIps.length)).toEqual(expect.arrayContaining([0, 1, 2, 3]));
    expect(all.some((p) => p.endpoint === null) && all.some((p) => p.persistentKeepalive === 25) && all.some((p) => p.listenPort === 51999)).toBe(true);
    expect(peers.get(nodeIds[0]!)).toHaveLength(TRICKY_NAMES.length - 1);
    expect(peers.get(loneId) ?? []).toEqual([]);
  });
});
