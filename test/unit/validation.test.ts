import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { InvalidError } from '../../src/domain/errors.js';
import {
  awgSchema,
  configNameSchema,
  configSchema,
  dnsSchema,
  endpointSchema,
  forwardProtocolSchema,
  ipAddressSchema,
  isValidName,
  listenPortSchema,
  nodeKindSchema,
  nodeNameSchema,
  parseEndpoint,
  parseOrInvalid,
  persistentKeepaliveSchema,
  portSchema,
  protocolSchema,
  settingKeySchema,
  subnetSchema,
  wireguardKeySchema,
} from '../../src/domain/validation.js';

/** The InvalidError message parseOrInvalid gives for `value`. */
function problem(schema: z.ZodType, value: unknown, where = 'field'): string {
  try {
    parseOrInvalid(schema, value, where);
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidError);
    return (err as Error).message;
  }
  throw new Error(`expected ${JSON.stringify(value)} to be refused`);
}

describe('names', () => {
  it('accept 1-64 letters, digits, ".", "_" and "-"', () => {
    for (const name of ['home', 'Office-2', 'a.b_c-d', 'x', 'n'.repeat(64)]) {
      expect(configNameSchema.parse(name)).toBe(name);
      expect(nodeNameSchema.parse(name)).toBe(name);
    }
  });

  it('refuse empty, too long, foreign characters and dots-only names with the reason', () => {
    expect(problem(configNameSchema, '', 'name')).toBe('name: must not be empty');
    expect(problem(configNameSchema, 'n'.repeat(65), 'name')).toBe(`name: "${'n'.repeat(65)}" is longer than 64 characters`);
    expect(problem(configNameSchema, 'my config', 'name')).toBe(
      'name: "my config" may contain only letters, digits, ".", "_" and "-"',
    );
    expect(problem(nodeNameSchema, 'ä', 'name')).toContain('may contain only');
    expect(problem(nodeNameSchema, '..', 'name')).toBe('name: ".." must contain a letter or a digit');
    expect(problem(nodeNameSchema, undefined, 'name')).toBe('name: is required');
    expect(problem(nodeNameSchema, 42, 'name')).toBe('name: must be a string (got 42)');
  });

  it('isValidName (the restore\'s quick check) agrees with the schema on every kind of name', () => {
    for (const name of ['home', 'a.b_c-d', 'n'.repeat(64), 'n'.repeat(65), '', '..', '-', 'my config', 'ä', 'a/b', 'a\u0000', 42, null]) {
      expect(isValidName(name), String(name)).toBe(nodeNameSchema.safeParse(name).success);
    }
  });
});

describe('setting keys', () => {
  it('take 1-128 letters, digits, ".", "_" and "-", and say so otherwise', () => {
    expect(settingKeySchema.parse('ui.theme_2-x')).toBe('ui.theme_2-x');
    expect(settingKeySchema.safeParse('k'.repeat(128)).success).toBe(true);
    for (const bad of ['', 'k'.repeat(129), 'has space', 'nul\u0000', 'ü']) {
      expect(problem(settingKeySchema, bad, 'key')).toMatch(/^key: setting key ".*" must be 1-128 letters, digits/);
    }
  });
});

describe('ports', () => {
  it('accept integers 1-65535', () => {
    expect(listenPortSchema.parse(51820)).toBe(51820);
    expect(portSchema.parse(1)).toBe(1);
    expect(portSchema.parse(65535)).toBe(65535);
  });

  it('refuse values out of range, fractions and strings', () => {
    expect(problem(listenPortSchema, 70000, 'listenPort')).toBe('listenPort: 70000 is out of range 1-65535');
    expect(problem(portSchema, 0, 'toPort')).toBe('toPort: 0 is out of range 1-65535');
    expect(problem(portSchema, 80.5, 'fromPort')).toBe('fromPort: 80.5 is not an integer');
    expect(problem(portSchema, '80', 'fromPort')).toBe('fromPort: must be an integer (got "80")');
    expect(problem(portSchema, Number.NaN, 'fromPort')).toContain('fromPort:');
  });

  it('let persistentKeepalive be 0-65535 or null', () => {
    expect(persistentKeepaliveSchema.parse(null)).toBeNull();
    expect(persistentKeepaliveSchema.parse(0)).toBe(0);
    expect(persistentKeepaliveSchema.parse(25)).toBe(25);
    expect(problem(persistentKeepaliveSchema, -1, 'persistentKeepalive')).toContain('out of range 0-65535');
  });
});

describe('enums', () => {
  it('accept exactly their values', () => {
    expect(protocolSchema.parse('wireguard')).toBe('wireguard');
    expect(protocolSchema.parse('amneziawg')).toBe('amneziawg');
    expect(nodeKindSchema.parse('static')).toBe('static');
    expect(forwardProtocolSchema.parse('udp')).toBe('udp');
  });

  it('name the allowed values when refusing', () => {
    expect(problem(protocolSchema, 'openvpn', 'protocol')).toBe(
      'protocol: "openvpn" is not a protocol (wireguard or amneziawg)',
    );
    expect(problem(nodeKindSchema, 'Dynamic', 'kind')).toBe('kind: "Dynamic" is not a node kind (dynamic or static)');
    expect(problem(forwardProtocolSchema, 'sctp', 'protocol')).toBe(
      'protocol: "sctp" is not a port-forward protocol (tcp or udp)',
    );
  });
});

describe('addresses and subnets', () => {
  it('accept plain addresses and host-bit-free CIDRs', () => {
    expect(ipAddressSchema.parse('fd00::1')).toBe('fd00::1');
    expect(subnetSchema.parse('10.0.0.0/24')).toBe('10.0.0.0/24');
  });

  it('pass on the parsers’ messages', () => {
    expect(problem(subnetSchema, '10.0.0.1/24', 'subnet')).toBe(
      'subnet: 10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?',
    );
    expect(problem(ipAddressSchema, '10.0.0.256', 'address')).toBe(
      'address: "10.0.0.256" is not an IPv4 or IPv6 address',
    );
  });
});

describe('endpoint', () => {
  it('accepts DNS names, IPv4 and bracketed IPv6 with a port', () => {
    expect(parseEndpoint('vpn.example.com:51820')).toEqual({ host: 'vpn.example.com', port: 51820, hostKind: 'dns' });
    expect(parseEndpoint('203.0.113.5:1')).toEqual({ host: '203.0.113.5', port: 1, hostKind: 'ipv4' });
    expect(parseEndpoint('[2001:db8::1]:65535')).toEqual({ host: '2001:db8::1', port: 65535, hostKind: 'ipv6' });
    expect(endpointSchema.parse('localhost:51820')).toBe('localhost:51820');
  });

  it.each([
    ['vpn.example.com', 'has no port'],
    [':51820', 'has no host'],
    ['2001:db8::1:51820', 'an IPv6 host must be in brackets'],
    ['[10.0.0.1]:51820', 'in brackets is not an IPv6 address'],
    ['300.1.1.1:51820', '"300.1.1.1" is not a valid IPv4 address'],
    ['bad_host.example:51820', 'is not a valid host name'],
    ['-bad.example:51820', 'is not a valid host name'],
    ['vpn.example.com:0', 'port "0" is not a number 1-65535'],
    ['vpn.example.com:65536', 'port "65536" is not a number 1-65535'],
    ['vpn.example.com:http', 'port "http" is not a number 1-65535'],
  ])('refuses %j (%s)', (endpoint, reason) => {
    const message = problem(endpointSchema, endpoint, 'endpoint');
    expect(message.startsWith('endpoint: ')).toBe(true);
    expect(message).toContain(reason);
    expect(() => parseEndpoint(endpoint)).toThrow(InvalidError);
  });
});

describe('dns', () => {
  it('accepts up to 8 distinct addresses of either family', () => {
    expect(dnsSchema.parse([])).toEqual([]);
    expect(dnsSchema.parse(['1.1.1.1', '2606:4700:4700::1111'])).toHaveLength(2);
  });

  it('names the bad entry by index', () => {
    expect(problem(dnsSchema, ['1.1.1.1', 'dns.google'], 'dns')).toBe(
      'dns: [1]: "dns.google" is not an IPv4 or IPv6 address',
    );
  });

  it('refuses more than 8 servers and repeats', () => {
    const nine = Array.from({ length: 9 }, (_, i) => `10.0.0.${i + 1}`);
    expect(problem(dnsSchema, nine, 'dns')).toBe('dns: lists 9 servers (at most 8)');
    expect(problem(dnsSchema, ['fd00::1', 'FD00:0::1'], 'dns')).toBe('dns: [1]: FD00:0::1 repeats dns[0]');
    expect(problem(dnsSchema, '1.1.1.1', 'dns')).toContain('must be an array of IP addresses');
  });
});

describe('awg parameters', () => {
  const good = { jc: 4, jmin: 8, jmax: 80, s1: 15, s2: 150, h1: 5, h2: 6, h3: 7, h4: 2147483647 };

  it('accept the documented ranges, all optional', () => {
    expect(awgSchema.parse(good)).toEqual(good);
    expect(awgSchema.parse({})).toEqual({});
    expect(awgSchema.parse({ jc: 128, jmax: 1280, s1: 1132, h1: 4294967295 })).toBeTruthy();
    expect(awgSchema.parse({ s1: 1131, s2: 1188 })).toBeTruthy();
    expect(awgSchema.parse({ jmin: 0, jmax: 1 })).toBeTruthy();
  });

  it('refuse unknown keys, naming them and the allowed ones', () => {
    expect(problem(awgSchema, { jc: 4, s3: 10 }, 'awg')).toBe(
      'awg: has unknown parameter(s) "s3" (allowed: jc, jmin, jmax, s1, s2, h1, h2, h3, h4)',
    );
  });

  it('refuse values outside the ranges', () => {
    expect(problem(awgSchema, { jc: 0 }, 'awg')).toBe('awg: jc: 0 is out of range 1-128');
    expect(problem(awgSchema, { jc: 129 }, 'awg')).toBe('awg: jc: 129 is out of range 1-128');
    expect(problem(awgSchema, { jmax: 1281 }, 'awg')).toBe('awg: jmax: 1281 is out of range 1-1280');
    expect(problem(awgSchema, { s1: 1133 }, 'awg')).toBe('awg: s1: 1133 is out of range 0-1132');
    expect(problem(awgSchema, { s2: 1189 }, 'awg')).toBe('awg: s2: 1189 is out of range 0-1188');
    expect(problem(awgSchema, { h1: 4 }, 'awg')).toBe('awg: h1: 4 is out of range 5-4294967295');
    expect(problem(awgSchema, { h2: 2 ** 32 }, 'awg')).toBe('awg: h2: 4294967296 is out of range 5-4294967295');
    expect(problem(awgSchema, { jc: 2.5 }, 'awg')).toBe('awg: jc: 2.5 is not an integer');
  });

  it('require jmin < jmax', () => {
    expect(problem(awgSchema, { jmin: 80, jmax: 80 }, 'awg')).toBe('awg: jmin: jmin 80 must be less than jmax 80');
  });

  it('refuse s1 + 56 = s2, counting an absent s1 as 0', () => {
    expect(problem(awgSchema, { s1: 20, s2: 76 }, 'awg')).toContain('s2: s2 76 equals s1 20 + 56');
    expect(problem(awgSchema, { s2: 56 }, 'awg')).toContain('s2: s2 56 equals s1 0 + 56');
    // The documented maxima collide with each other: 1132 + 56 = 1188.
    expect(problem(awgSchema, { s1: 1132, s2: 1188 }, 'awg')).toContain('s2: s2 1188 equals s1 1132 + 56');
  });

  it('require distinct headers', () => {
    expect(problem(awgSchema, { h1: 10, h2: 11, h3: 10 }, 'awg')).toBe('awg: h3: 10 is also h1; h1-h4 must differ');
  });

  it('refuse a non-object', () => {
    expect(problem(awgSchema, [1, 2], 'awg')).toBe('awg: must be an object of AmneziaWG parameters (got an array)');
  });
});

describe('config', () => {
  const base = { name: 'home', subnet: '10.0.0.0/24', listenPort: 51820 };

  it('fills defaults for dns and protocol', () => {
    expect(configSchema.parse(base)).toEqual({ ...base, dns: [], protocol: 'wireguard' });
  });

  it('accepts awg with amneziawg', () => {
    expect(configSchema.parse({ ...base, protocol: 'amneziawg', awg: { jc: 4 } }).awg).toEqual({ jc: 4 });
  });

  it('refuses awg with wireguard', () => {
    expect(problem(configSchema, { ...base, protocol: 'wireguard', awg: { jc: 4 } }, 'config "home"')).toBe(
      'config "home": awg: awg parameters are given but protocol is wireguard (set protocol to amneziawg, or drop awg)',
    );
    expect(configSchema.parse({ ...base, awg: null }).awg).toBeNull();
  });

  it('lists every bad field with its path, and carries them as details', () => {
    try {
      parseOrInvalid(configSchema, { name: 'my home', subnet: '10.0.0.1/24', listenPort: 70000 }, 'config');
      expect.unreachable();
    } catch (err) {
      const e = err as InvalidError;
      expect(e.message).toBe(
        'config: name: "my home" may contain only letters, digits, ".", "_" and "-"; ' +
          'subnet: 10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?; ' +
          'listenPort: 70000 is out of range 1-65535',
      );
      expect(e.details).toEqual({
        where: 'config',
        issues: [
          { path: 'name', message: '"my home" may contain only letters, digits, ".", "_" and "-"' },
          { path: 'subnet', message: '10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?' },
          { path: 'listenPort', message: '70000 is out of range 1-65535' },
        ],
      });
    }
  });
});

describe('wireguardKeySchema', () => {
  it('accepts a 32-byte base64 key and refuses anything else', () => {
    expect(wireguardKeySchema.parse('hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=')).toBeTruthy();
    expect(problem(wireguardKeySchema, 'abc', 'publicKey')).toBe(
      'publicKey: is not a WireGuard key (44 characters of base64 encoding 32 bytes)',
    );
  });
});
