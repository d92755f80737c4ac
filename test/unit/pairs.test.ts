import { describe, expect, it } from 'vitest';
import { isUuid } from '../../src/domain/ids.js';
import { linksForPair, meshLinkIds } from '../../src/domain/pairs.js';


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

describe('meshLinkIds', () => {
  // The pieces as the mesh.generate statement builds them (src/repositories/links.ts).
  const hex6 = (value: number) => value.toString(16).padStart(6, '0');

  it('gives UUIDv7 ids whose halves keep to six digits up to 2^22 nodes, in (from, to) order', () => {
    const last = 2 ** 22 - 1;
    for (let k = 0; k < 200; k++) {
      const { prefix, fromBase, toBase } = meshLinkIds(Date.UTC(2026, 11, 2));
      const link = (i: number, j: number) => `${prefix}${hex6(fromBase + i)}${hex6(toBase + 2 * j)}`;
      const group = (lo: number, hi: number) => `${prefix}${hex6(fromBase + lo)}${hex6(toBase + 2 * hi + 1)}`;
      const ids = [link(0, 1), group(0, 1), link(0, last), link(1, 0), link(last - 1, last), group(last - 1, last), link(last, 0), link(last, last - 1)];
      for (const id of ids) {
        expect(id).toHaveLength(36);
        expect(isUuid(id), id).toBe(true);
        expect(id[14]).toBe('7');
        expect('89ab').toContain(id[19]);
      }
      expect([...ids].sort()).toEqual(ids);
      expect(new Set(ids).size).toBe(ids.length);
    }
  });
});
