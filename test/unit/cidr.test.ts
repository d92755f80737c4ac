import { describe, expect, it } from 'vitest';
import { InvalidError } from '../../src/domain/errors.js';
import {
  addressCount,
  canonicalAddress,
  canonicalCidr,
  cidrsOverlap,
  contains,
  formatAddress,
  formatCidr,
  isCidr,
  isIpAddress,
  lastAddress,
  parseAddress,
  parseCidr,
} from '../../src/domain/cidr.js';

function invalidMessage(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidError);
    return (err as Error).message;
  }
  throw new Error('expected an InvalidError');
}

describe('IPv4 addresses', () => {
  it('parse to their 32-bit value and format back', () => {
    const a = parseAddress('10.0.1.5');
    expect(a).toEqual({ version: 4, value: 0x0a000105n });
    expect(formatAddress(a)).toBe('10.0.1.5');
    expect(parseAddress('255.255.255.255').value).toBe(0xffffffffn);
    expect(parseAddress('0.0.0.0').value).toBe(0n);
  });

  it.each(['10.0.0', '10.0.0.0.1', '256.0.0.1', '10.0.0.-1', '10..0.1', ' 10.0.0.1', '10.0.0.1 ', 'a.b.c.d', ''])(
    'refuses %j',
    (s) => {
      expect(isIpAddress(s)).toBe(false);
      expect(invalidMessage(() => parseAddress(s, 'address'))).toBe(
        `address ${JSON.stringify(s)} is not an IPv4 or IPv6 address`,
      );
    },
  );

  it('refuses leading zeros, which some tools read as octal', () => {
    expect(isIpAddress('010.0.0.1')).toBe(false);
    expect(isIpAddress('10.0.0.01')).toBe(false);
  });

  it('says that a CIDR is not a single address', () => {
    expect(invalidMessage(() => parseAddress('10.0.0.1/32', 'address'))).toContain('is a CIDR; a single address');
  });
});

describe('IPv6 addresses', () => {
  it('parse with :: compression anywhere', () => {
    expect(parseAddress('::').value).toBe(0n);
    expect(parseAddress('::1').value).toBe(1n);
    expect(parseAddress('fd00::').value).toBe(0xfd00n << 112n);
    expect(parseAddress('fd00::1:2').value).toBe((0xfd00n << 112n) | (1n << 16n) | 2n);
    expect(parseAddress('1:2:3:4:5:6:7:8').value).toBe(0x00010002000300040005000600070008n);
  });

  it('format canonically: lowercase, no leading zeros, longest zero run compressed (RFC 5952)', () => {
    expect(canonicalAddress('FD00:0000:0000:0000:0000:0000:0000:0001')).toBe('fd00::1');
    expect(canonicalAddress('2001:db8:0:0:1:0:0:1')).toBe('2001:db8::1:0:0:1'); // first of two equal runs
    expect(canonicalAddress('2001:0:0:1:0:0:0:1')).toBe('2001:0:0:1::1'); // the longer run wins
    expect(canonicalAddress('2001:db8:0:1:1:1:1:1')).toBe('2001:db8:0:1:1:1:1:1'); // one zero group stays
    expect(canonicalAddress('0:0:0:0:0:0:0:0')).toBe('::');
    expect(canonicalAddress('1:0:0:0:0:0:0:0')).toBe('1::');
    expect(canonicalAddress('0:0:0:0:0:0:0:1')).toBe('::1');
    expect(canonicalAddress('ABCD:EF01::0db8')).toBe('abcd:ef01::db8');
  });

  it('keep the dotted tail of IPv4-mapped addresses', () => {
    expect(canonicalAddress('::FFFF:10.0.0.1')).toBe('::ffff:10.0.0.1');
    expect(canonicalAddress('0:0:0:0:0:ffff:a00:1')).toBe('::ffff:10.0.0.1');
    expect(parseAddress('::ffff:10.0.0.1').version).toBe(6);
  });

  it.each([
    '1:2:3:4:5:6:7',
    '1:2:3:4:5:6:7:8:9',
    '1::2::3',
    ':1::2',
    '1::2:',
    '1:::2',
    '12345::',
    'fd00::g',
    '1:2:3:4:5:6:7::8',
    '::1.2.3.4:5',
    '::256.0.0.1',
  ])('refuses %j', (s) => {
    expect(isIpAddress(s)).toBe(false);
    expect(() => parseAddress(s)).toThrow(InvalidError);
  });

  it('refuses zone indexes with a reason', () => {
    expect(invalidMessage(() => parseAddress('fe80::1%eth0', 'address'))).toBe(
      'address "fe80::1%eth0" has a zone index (%...); mesh addresses cannot be link-scoped',
    );
  });
});

describe('CIDRs', () => {
  it('parse IPv4 and IPv6 blocks', () => {
    expect(parseCidr('10.0.0.0/24')).toEqual({ version: 4, network: 0x0a000000n, prefix: 24, bits: 32 });
    expect(parseCidr('fd00::/64')).toEqual({ version: 6, network: 0xfd00n << 112n, prefix: 64, bits: 128 });
    expect(parseCidr('0.0.0.0/0').prefix).toBe(0);
    expect(parseCidr('10.0.0.7/32').network).toBe(0x0a000007n);
    expect(parseCidr('fd00::1/128').network).toBe((0xfd00n << 112n) | 1n);
  });

  it('format canonically', () => {
    expect(canonicalCidr('FD00:0:0:0::/64')).toBe('fd00::/64');
    expect(formatCidr(parseCidr('192.168.0.0/16'))).toBe('192.168.0.0/16');
  });

  it('refuse host bits and suggest the network', () => {
    expect(invalidMessage(() => parseCidr('10.0.0.1/24'))).toBe(
      '10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?',
    );
    expect(invalidMessage(() => parseCidr('fd00::1/64', 'subnet'))).toBe(
      'subnet fd00::1/64 has host bits set; did you mean fd00::/64?',
    );
  });

  it('refuse a missing prefix', () => {
    expect(invalidMessage(() => parseCidr('10.0.0.0', 'subnet'))).toBe(
      'subnet "10.0.0.0" is not a CIDR: the /prefix is missing (e.g. 10.0.0.0/24 or fd00::/64)',
    );
  });

  it('refuse prefixes outside the family', () => {
    expect(invalidMessage(() => parseCidr('10.0.0.0/33'))).toBe(
      '"10.0.0.0/33" is not a CIDR: prefix "33" is not a number 0-32 (IPv4)',
    );
    expect(invalidMessage(() => parseCidr('fd00::/129'))).toContain('prefix "129" is not a number 0-128 (IPv6)');
    expect(isCidr('10.0.0.0/')).toBe(false);
    expect(isCidr('10.0.0.0/024')).toBe(false);
    expect(isCidr('10.0.0.0/-1')).toBe(false);
    expect(isCidr('10.0.0.0/24/1')).toBe(false);
  });

  it('refuse a bad address part', () => {
    expect(invalidMessage(() => parseCidr('10.0.0.300/24'))).toBe(
      '"10.0.0.300/24" is not a CIDR: "10.0.0.300" is not an IPv4 or IPv6 address',
    );
    expect(isCidr('not a cidr')).toBe(false);
  });

  it('know their size and last address', () => {
    const v4 = parseCidr('10.0.0.0/24');
    expect(addressCount(v4)).toBe(256n);
    expect(formatAddress({ version: 4, value: lastAddress(v4) })).toBe('10.0.0.255');
    const v6 = parseCidr('fd00::/64');
    expect(addressCount(v6)).toBe(2n ** 64n);
    expect(formatAddress({ version: 6, value: lastAddress(v6) })).toBe('fd00::ffff:ffff:ffff:ffff');
  });
});

describe('contains', () => {
  it('holds for addresses inside the block, edges included', () => {
    expect(contains('10.0.0.0/24', '10.0.0.0')).toBe(true);
    expect(contains('10.0.0.0/24', '10.0.0.255')).toBe(true);
    expect(contains('10.0.0.0/24', '10.0.1.0')).toBe(false);
    expect(contains('0.0.0.0/0', '203.0.113.9')).toBe(true);
    expect(contains('fd00::/64', 'fd00::ffff:ffff:ffff:ffff')).toBe(true);
    expect(contains('fd00::/64', 'fd00:0:0:1::')).toBe(false);
    expect(contains(parseCidr('10.0.0.5/32'), parseAddress('10.0.0.5'))).toBe(true);
  });

  it('never holds across families', () => {
    expect(contains('::/0', '10.0.0.1')).toBe(false);
    expect(contains('0.0.0.0/0', '::ffff:10.0.0.1')).toBe(false);
  });
});

describe('cidrsOverlap', () => {
  it('detects nesting in either order and identical blocks', () => {
    expect(cidrsOverlap('10.0.0.0/8', '10.1.0.0/16')).toBe(true);
    expect(cidrsOverlap('10.1.0.0/16', '10.0.0.0/8')).toBe(true);
    expect(cidrsOverlap('fd00::/64', 'fd00::/64')).toBe(true);
    expect(cidrsOverlap('fd00::/48', 'fd00:0:0:ff::/64')).toBe(true);
  });

  it('is false for disjoint blocks and across families', () => {
    expect(cidrsOverlap('10.0.0.0/24', '10.0.1.0/24')).toBe(false);
    expect(cidrsOverlap('10.0.0.0/31', '10.0.0.2/31')).toBe(false);
    expect(cidrsOverlap('fd00::/64', 'fd00:0:0:1::/64')).toBe(false);
    expect(cidrsOverlap('0.0.0.0/0', '::/0')).toBe(false);
  });
});
