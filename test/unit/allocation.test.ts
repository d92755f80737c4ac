import { describe, expect, it } from 'vitest';
import { ConflictError, InvalidError } from '../../src/domain/errors.js';
import {
  AddressAllocator,
  allocateAddress,
  hostAddressWithPrefix,
  usableRange,
  validateRequestedAddress,
} from '../../src/domain/allocation.js';
import { parseCidr } from '../../src/domain/cidr.js';

function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected an error');
}

/** Every address the allocator hands out from an empty subnet, until it reports full. */
function drain(subnet: string): string[] {
  const allocator = new AddressAllocator(subnet, []);
  const out: string[] = [];
  for (;;) {
    try {
      out.push(allocator.next());
    } catch (err) {
      expect(err).toBeInstanceOf(ConflictError);
      return out;
    }
  }
}

describe('allocateAddress in IPv4', () => {
  it('starts after the network address', () => {
    expect(allocateAddress('10.0.0.0/24', [])).toBe('10.0.0.1');
  });

  it('returns the lowest free address, filling gaps first', () => {
    expect(allocateAddress('10.0.0.0/24', ['10.0.0.1', '10.0.0.2', '10.0.0.4'])).toBe('10.0.0.3');
  });

  it('never hands out the network or broadcast address', () => {
    expect(drain('10.0.0.0/29')).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6']);
    expect(drain('10.0.0.0/30')).toEqual(['10.0.0.1', '10.0.0.2']);
  });

  it('uses both addresses of a /31 (RFC 3021 point-to-point)', () => {
    expect(drain('10.0.0.0/31')).toEqual(['10.0.0.0', '10.0.0.1']);
  });

  it('uses the single address of a /32', () => {
    expect(drain('10.0.0.7/32')).toEqual(['10.0.0.7']);
  });

  it('reports a full subnet as a conflict naming subnet and config', () => {
    const err = thrown(() => allocateAddress('10.0.0.0/30', ['10.0.0.1', '10.0.0.2']));
    expect(err).toBeInstanceOf(ConflictError);
    expect(err.message).toBe('subnet 10.0.0.0/30 has no free address');
    const named = thrown(() => allocateAddress('10.0.0.0/30', ['10.0.0.1', '10.0.0.2'], { configName: 'home' }));
    expect(named.message).toBe('subnet 10.0.0.0/30 of config "home" has no free address');
  });

  it('ignores taken entries outside the subnet or of the other family', () => {
    expect(allocateAddress('10.0.0.0/24', ['10.0.1.1', 'fd00::1', 'garbage', '10.0.0.1'])).toBe('10.0.0.2');
  });

  it('refuses a subnet that is not a CIDR', () => {
    expect(thrown(() => allocateAddress('10.0.0.1/24', []))).toBeInstanceOf(InvalidError);
  });
});

describe('allocateAddress in IPv6', () => {
  it('skips the subnet-router anycast address of a /64', () => {
    expect(allocateAddress('fd00::/64', [])).toBe('fd00::1');
  });

  it('skips taken addresses of a /64 in any spelling without enumerating the subnet', () => {
    const taken = Array.from({ length: 5000 }, (_, i) => `fd00:0::${(i + 1).toString(16).toUpperCase()}`);
    const started = performance.now();
    expect(allocateAddress('fd00::/64', taken)).toBe('fd00::1389'); // 5001
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it('uses the last address, since IPv6 has no broadcast', () => {
    expect(drain('fd00::/126')).toEqual(['fd00::1', 'fd00::2', 'fd00::3']);
  });

  it('uses both addresses of a /127 (RFC 6164)', () => {
    expect(drain('fd00::/127')).toEqual(['fd00::', 'fd00::1']);
  });

  it('uses the single address of a /128', () => {
    expect(drain('fd00::5/128')).toEqual(['fd00::5']);
  });

  it('reports a full /127 as a conflict', () => {
    const err = thrown(() => allocateAddress('fd00::/127', ['fd00::', 'fd00::1'], { configName: 'v6' }));
    expect(err).toBeInstanceOf(ConflictError);
    expect(err.message).toBe('subnet fd00::/127 of config "v6" has no free address');
  });
});

describe('AddressAllocator', () => {
  it('hands out successive addresses in one batch and respects addresses taken meanwhile', () => {
    const allocator = new AddressAllocator('10.0.0.0/24', ['10.0.0.2']);
    expect(allocator.next()).toBe('10.0.0.1');
    allocator.take('10.0.0.3');
    expect(allocator.next()).toBe('10.0.0.4');
    expect(allocator.next()).toBe('10.0.0.5');
  });

  it('allocates 300 nodes in a /64 quickly', () => {
    const allocator = new AddressAllocator('fd00::/64', []);
    const addresses = Array.from({ length: 300 }, () => allocator.next());
    expect(new Set(addresses).size).toBe(300);
    expect(addresses.at(-1)).toBe('fd00::12c');
  });
});

describe('usableRange', () => {
  it('describes the edges per family and prefix', () => {
    expect(usableRange(parseCidr('10.0.0.0/24'))).toEqual({ first: 0x0a000001n, last: 0x0a0000fen });
    expect(usableRange(parseCidr('10.0.0.0/31'))).toEqual({ first: 0x0a000000n, last: 0x0a000001n });
    expect(usableRange(parseCidr('fd00::/127')).first).toBe(0xfd00n << 112n);
  });
});

describe('validateRequestedAddress', () => {
  const taken = ['10.0.0.5', 'fd00::5'];

  it('returns the canonical address when it is free and usable', () => {
    expect(validateRequestedAddress('10.0.0.0/24', '10.0.0.6', taken, 'home')).toBe('10.0.0.6');
    expect(validateRequestedAddress('fd00::/64', 'FD00:0::0006', taken, 'home')).toBe('fd00::6');
    expect(validateRequestedAddress('fd00::/64', 'fd00::ffff:ffff:ffff:ffff', taken, 'home')).toBe(
      'fd00::ffff:ffff:ffff:ffff',
    );
  });

  it('refuses an address outside the subnet', () => {
    const err = thrown(() => validateRequestedAddress('10.0.0.0/24', '10.0.1.5', taken, 'home'));
    expect(err).toBeInstanceOf(InvalidError);
    expect(err.message).toBe('address 10.0.1.5 is outside subnet 10.0.0.0/24 of config "home"');
  });

  it('refuses an address of the other family', () => {
    expect(thrown(() => validateRequestedAddress('10.0.0.0/24', 'fd00::1', taken, 'home')).message).toBe(
      'address fd00::1 is IPv6 but subnet 10.0.0.0/24 of config "home" is IPv4',
    );
  });

  it('refuses the network and broadcast addresses', () => {
    const network = thrown(() => validateRequestedAddress('10.0.0.0/24', '10.0.0.0', taken, 'home'));
    expect(network).toBeInstanceOf(InvalidError);
    expect(network.message).toBe(
      'address 10.0.0.0 is the network address of subnet 10.0.0.0/24 of config "home"; the first usable address is 10.0.0.1',
    );
    const broadcast = thrown(() => validateRequestedAddress('10.0.0.0/24', '10.0.0.255', taken, 'home'));
    expect(broadcast).toBeInstanceOf(InvalidError);
    expect(broadcast.message).toBe(
      'address 10.0.0.255 is the broadcast address of subnet 10.0.0.0/24 of config "home"; the last usable address is 10.0.0.254',
    );
  });

  it('refuses the IPv6 subnet-router anycast address', () => {
    expect(thrown(() => validateRequestedAddress('fd00::/64', 'fd00::', taken, 'home')).message).toBe(
      'address fd00:: is the subnet-router anycast address of subnet fd00::/64 of config "home"; the first usable address is fd00::1',
    );
  });

  it('accepts both addresses of a /31 and a /127', () => {
    expect(validateRequestedAddress('10.0.0.0/31', '10.0.0.0', [], 'p2p')).toBe('10.0.0.0');
    expect(validateRequestedAddress('10.0.0.0/31', '10.0.0.1', [], 'p2p')).toBe('10.0.0.1');
    expect(validateRequestedAddress('fd00::/127', 'fd00::', [], 'p2p')).toBe('fd00::');
    expect(validateRequestedAddress('10.0.0.9/32', '10.0.0.9', [], 'one')).toBe('10.0.0.9');
  });

  it('reports a taken address as a conflict, whatever its spelling', () => {
    const err = thrown(() => validateRequestedAddress('fd00::/64', 'fd00:0:0:0::5', taken, 'home'));
    expect(err).toBeInstanceOf(ConflictError);
    expect(err.message).toBe('address fd00::5 is already taken in subnet fd00::/64 of config "home"');
  });

  it('refuses something that is not an address', () => {
    const err = thrown(() => validateRequestedAddress('10.0.0.0/24', '10.0.0.5/24', taken, 'home'));
    expect(err).toBeInstanceOf(InvalidError);
    expect(err.message).toContain('address "10.0.0.5/24" is a CIDR');
  });
});

describe('hostAddressWithPrefix', () => {
  it('gives a single-host route per family, canonical', () => {
    expect(hostAddressWithPrefix('10.0.0.2', 4)).toBe('10.0.0.2/32');
    expect(hostAddressWithPrefix('FD00::0002', 6)).toBe('fd00::2/128');
    expect(hostAddressWithPrefix('fd00::2')).toBe('fd00::2/128');
  });

  it('refuses an address of the wrong family', () => {
    expect(thrown(() => hostAddressWithPrefix('10.0.0.2', 6)).message).toBe(
      'address 10.0.0.2 is IPv4, expected an IPv6 address',
    );
  });
});
