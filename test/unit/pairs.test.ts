import { describe, expect, it } from 'vitest';
import { InvalidError } from '../../src/domain/errors.js';
import {
  linksForPair,
  missingPairs,
  pairCount,
  pairKey,
  pairKeysOfLinks,
  type NodePair,
} from '../../src/domain/pairs.js';

const ids = (n: number) => Array.from({ length: n }, (_, i) => `node-${String(i).padStart(4, '0')}`);
const nothingExists = () => false;

describe('pairKey', () => {
  it('is the same for both orders', () => {
    expect(pairKey('b', 'a')).toBe(pairKey('a', 'b'));
    expect(pairKey('a', 'b')).toBe('a:b');
  });
});

describe('missingPairs', () => {
  it('yields n(n-1)/2 = 44,850 distinct pairs for 300 nodes, in batches', () => {
    const batches = [...missingPairs(ids(300), nothingExists, 1000)];
    expect(pairCount(300)).toBe(44_850);
    expect(batches).toHaveLength(45);
    expect(batches.slice(0, -1).every((b) => b.length === 1000)).toBe(true);
    expect(batches.at(-1)).toHaveLength(850);
    const keys = new Set(batches.flat().map(([a, b]) => pairKey(a, b)));
    expect(keys.size).toBe(44_850);
  });

  it('produces pairs lazily: the first batch asks about no more pairs than it holds', () => {
    let asked = 0;
    const gen = missingPairs(
      ids(300),
      () => {
        asked++;
        return false;
      },
      100,
    );
    const first = gen.next();
    expect(first.done).toBe(false);
    expect(first.value).toHaveLength(100);
    expect(asked).toBe(100);
  });

  it('skips existing pairs given as a predicate or as a set of keys', () => {
    const nodes = ids(300);
    const hub = nodes[0]!;
    const viaPredicate = [...missingPairs(nodes, (lo, hi) => lo === hub || hi === hub, 500)].flat();
    expect(viaPredicate).toHaveLength(44_850 - 299);
    expect(viaPredicate.some(([a, b]) => a === hub || b === hub)).toBe(false);

    const existing = new Set(nodes.slice(1).map((n) => pairKey(n, hub)));
    const viaSet = [...missingPairs(nodes, existing, 500)].flat();
    expect(viaSet).toEqual(viaPredicate);
  });

  it('yields nothing when every pair exists or there are fewer than two nodes', () => {
    expect([...missingPairs(ids(10), () => true, 7)]).toEqual([]);
    expect([...missingPairs(['only'], nothingExists)]).toEqual([]);
    expect([...missingPairs([], nothingExists)]).toEqual([]);
  });

  it('is deterministic: sorted ids, smaller id first, whatever the input order and duplicates', () => {
    const pairs = [...missingPairs(['c', 'a', 'b', 'a'], nothingExists, 2)];
    const expected: NodePair[][] = [
      [
        ['a', 'b'],
        ['a', 'c'],
      ],
      [['b', 'c']],
    ];
    expect(pairs).toEqual(expected);
  });

  it('calls the predicate with the smaller id first', () => {
    const seen: [string, string][] = [];
    const batches = [
      ...missingPairs(['z', 'y', 'x'], (lo, hi) => {
        seen.push([lo, hi]);
        return false;
      }),
    ];
    expect(batches.flat()).toHaveLength(3);
    expect(seen.every(([lo, hi]) => lo < hi)).toBe(true);
  });

  it('refuses a batch size that is not a positive integer', () => {
    expect(() => missingPairs(ids(3), nothingExists, 0).next()).toThrow(InvalidError);
    expect(() => missingPairs(ids(3), nothingExists, 1.5).next()).toThrow('batchSize must be a positive integer');
  });
});

describe('pairKeysOfLinks', () => {
  it('collapses both directions of a pair into one key', () => {
    const keys = pairKeysOfLinks([
      { fromNodeId: 'a', toNodeId: 'b' },
      { fromNodeId: 'b', toNodeId: 'a' },
      { fromNodeId: 'a', toNodeId: 'c' },
    ]);
    expect([...keys].sort()).toEqual(['a:b', 'a:c']);
  });
});

describe('linksForPair', () => {
  const addresses = new Map([
    ['a', '10.0.0.1'],
    ['b', '10.0.0.2'],
    ['v6a', 'fd00::1'],
    ['v6b', 'FD00::0002'],
  ]);
  const addressOf = (id: string) => addresses.get(id);

  it('links both directions with the peer host address and one group id', () => {
    expect(linksForPair('a', 'b', { linkGroupId: 'g1', addressOf, keepalive: 25 })).toEqual([
      { fromNodeId: 'a', toNodeId: 'b', linkGroupId: 'g1', allowedIps: ['10.0.0.2/32'], persistentKeepalive: 25 },
      { fromNodeId: 'b', toNodeId: 'a', linkGroupId: 'g1', allowedIps: ['10.0.0.1/32'], persistentKeepalive: 25 },
    ]);
  });

  it('uses /128 host routes in IPv6 meshes, canonical', () => {
    const [ab, ba] = linksForPair('v6a', 'v6b', { linkGroupId: 'g2', addressOf });
    expect(ab.allowedIps).toEqual(['fd00::2/128']);
    expect(ba.allowedIps).toEqual(['fd00::1/128']);
    expect(ab.persistentKeepalive).toBeNull();
  });

  it('takes keepalive per direction and treats 0 as off', () => {
    const [ab, ba] = linksForPair('a', 'b', {
      linkGroupId: 'g',
      addressOf,
      keepalive: (from) => (from === 'a' ? 25 : 0),
    });
    expect(ab.persistentKeepalive).toBe(25);
    expect(ba.persistentKeepalive).toBeNull();
  });

  it('refuses self pairs, unknown nodes and keepalive out of range', () => {
    expect(() => linksForPair('a', 'a', { linkGroupId: 'g', addressOf })).toThrow('cannot be paired with itself');
    expect(() => linksForPair('a', 'zz', { linkGroupId: 'g', addressOf })).toThrow('node zz has no address');
    expect(() => linksForPair('a', 'b', { linkGroupId: 'g', addressOf, keepalive: 70000 })).toThrow(
      'persistentKeepalive 70000 of link a -> b is out of range 0-65535',
    );
  });
});
