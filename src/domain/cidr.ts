/**
 * IPv4 / IPv6 addresses and CIDR blocks as BigInt values.
 *
 * One representation for both families keeps the maths (containment, overlap, the next
 * free address in a /64) the same code: an IPv6 subnet has more addresses than a Number
 * can count, so everything is BigInt. The parsers are strict on purpose: what they accept
 * is stored and later written into WireGuard configs and EMQX, so ambiguous spellings
 * (leading zeros, which some tools read as octal; zone indexes; host bits in a subnet) are
 * refused with a message instead of being guessed at. Output is canonical (RFC 5952 for
 * IPv6), so equal addresses are equal strings and unique indexes in the database hold.
 */
import { InvalidError } from './errors.js';

export type IpVersion = 4 | 6;

export interface IpAddress {
  readonly version: IpVersion;
  readonly value: bigint;
}

export interface Cidr {
  readonly version: IpVersion;
  /** The first address of the block (host bits are zero). */
  readonly network: bigint;
  readonly prefix: number;
  /** Address width: 32 for IPv4, 128 for IPv6. */
  readonly bits: 32 | 128;
}

export const bitsOf = (version: IpVersion): 32 | 128 => (version === 4 ? 32 : 128);

/** Quoted and shortened, so a pasted megabyte does not end up in an error message or a log. */
function show(value: unknown): string {
  if (typeof value !== 'string') return value === null ? 'null' : typeof value;
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
}

const label = (field: string | undefined) => (field ? `${field} ` : '');

// Leading zeros are refused: inet_aton and some shells read "010" as octal 8.
const DEC_OCTET = /^(?:0|[1-9]\d{0,2})$/;
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

function parseIPv4(s: string): bigint | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0n;
  for (const part of parts) {
    if (!DEC_OCTET.test(part)) return undefined;
    const octet = Number(part);
    if (octet > 255) return undefined;
    value = (value << 8n) | BigInt(octet);
  }
  return value;
}

/** 16-bit groups of one side of "::"; a dotted IPv4 tail counts as two groups. */
function parseGroups(part: string, allowIPv4Tail: boolean): number[] | undefined {
  if (part === '') return [];
  const items = part.split(':');
  const groups: number[] = [];
  for (const [i, item] of items.entries()) {
    if (allowIPv4Tail && i === items.length - 1 && item.includes('.')) {
      const v4 = parseIPv4(item);
      if (v4 === undefined) return undefined;
      groups.push(Number(v4 >> 16n), Number(v4 & 0xffffn));
    } else if (HEX_GROUP.test(item)) {
      groups.push(Number.parseInt(item, 16));
    } else {
      return undefined;
    }
  }
  return groups;
}

function parseIPv6(s: string): bigint | undefined {
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  let groups: number[];
  if (halves.length === 1) {
    const all = parseGroups(s, true);
    if (all?.length !== 8) return undefined;
    groups = all;
  } else {
    const head = parseGroups(halves[0]!, false);
    const tail = parseGroups(halves[1]!, true);
    // "::" stands for at least one zero group.
    if (!head || !tail || head.length + tail.length > 7) return undefined;
    groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  }
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
}

function tryParseAddress(s: string): IpAddress | undefined {
  if (s.includes(':')) {
    const value = parseIPv6(s);
    return value === undefined ? undefined : { version: 6, value };
  }
  const value = parseIPv4(s);
  return value === undefined ? undefined : { version: 4, value };
}

/** Throws InvalidError naming `field` (e.g. "address") when `s` is not a plain IP address. */
export function parseAddress(s: string, field?: string): IpAddress {
  if (typeof s !== 'string') throw new InvalidError(`${label(field)}must be a string (got ${show(s)})`);
  const parsed = tryParseAddress(s);
  if (parsed) return parsed;
  if (s.includes('%')) {
    throw new InvalidError(`${label(field)}${show(s)} has a zone index (%...); mesh addresses cannot be link-scoped`);
  }
  if (s.includes('/')) {
    throw new InvalidError(`${label(field)}${show(s)} is a CIDR; a single address without /prefix is expected here`);
  }
  throw new InvalidError(`${label(field)}${show(s)} is not an IPv4 or IPv6 address`);
}

export const isIpAddress = (s: unknown): s is string => typeof s === 'string' && tryParseAddress(s) !== undefined;

function formatIPv4(value: bigint): string {
  return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join('.');
}

/** RFC 5952: lowercase, no leading zeros, the longest (first on a tie) run of 2+ zero groups as "::". */
function formatIPv6(value: bigint): string {
  // RFC 5952 §5: IPv4-mapped addresses keep the dotted tail, as every tool prints them.
  if (value >> 32n === 0xffffn) return `::ffff:${formatIPv4(value & 0xffffffffn)}`;
  const groups = Array.from({ length: 8 }, (_, i) => Number((value >> BigInt(112 - 16 * i)) & 0xffffn));
  let bestStart = -1;
  let bestLength = 1; // a single zero group is never compressed
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLength))}`;
}

export function formatAddress(address: IpAddress): string {
  return address.version === 4 ? formatIPv4(address.value) : formatIPv6(address.value);
}

/** The canonical spelling of an address: "FD00:0:0::01" -> "fd00::1". */
export const canonicalAddress = (s: string, field?: string): string => formatAddress(parseAddress(s, field));

const PREFIX = /^(?:0|[1-9]\d{0,2})$/;

/**
 * "10.0.0.0/24" or "fd00::/64". Host bits must be zero: "10.0.0.1/24" usually means the
 * user typed an interface address where a subnet was asked for, so we say so rather than
 * silently masking it.
 */
export function parseCidr(s: string, field?: string): Cidr {
  const where = label(field);
  if (typeof s !== 'string') throw new InvalidError(`${where}must be a string (got ${show(s)})`);
  const example = '(e.g. 10.0.0.0/24 or fd00::/64)';
  const slash = s.indexOf('/');
  if (slash < 0) {
    throw new InvalidError(`${where}${show(s)} is not a CIDR: the /prefix is missing ${example}`);
  }
  const addressPart = s.slice(0, slash);
  const prefixPart = s.slice(slash + 1);
  const address = tryParseAddress(addressPart);
  if (!address) {
    throw new InvalidError(`${where}${show(s)} is not a CIDR: ${show(addressPart)} is not an IPv4 or IPv6 address`);
  }
  const bits = bitsOf(address.version);
  const prefix = PREFIX.test(prefixPart) ? Number(prefixPart) : Number.NaN;
  if (!(prefix <= bits)) {
    throw new InvalidError(
      `${where}${show(s)} is not a CIDR: prefix ${show(prefixPart)} is not a number 0-${bits} (IPv${address.version})`,
    );
  }
  const cidr: Cidr = { version: address.version, network: address.value & ~hostMaskOf(bits, prefix), prefix, bits };
  if (cidr.network !== address.value) {
    throw new InvalidError(`${where}${s} has host bits set; did you mean ${formatCidr(cidr)}?`);
  }
  return cidr;
}

export const isCidr = (s: unknown): s is string => {
  if (typeof s !== 'string') return false;
  try {
    parseCidr(s);
    return true;
  } catch {
    return false;
  }
};

export function formatCidr(cidr: Cidr): string {
  return `${formatAddress({ version: cidr.version, value: cidr.network })}/${cidr.prefix}`;
}

/** The canonical spelling of a CIDR: "FD00:0::/64" -> "fd00::/64". */
export const canonicalCidr = (s: string, field?: string): string => formatCidr(parseCidr(s, field));

function hostMaskOf(bits: number, prefix: number): bigint {
  return (1n << BigInt(bits - prefix)) - 1n;
}

/** The host part of the block as a mask: 0.0.0.255 for a /24. */
export const hostMask = (cidr: Cidr): bigint => hostMaskOf(cidr.bits, cidr.prefix);

/** The last address of the block (the IPv4 broadcast address for prefixes up to /30). */
export const lastAddress = (cidr: Cidr): bigint => cidr.network | hostMask(cidr);

/** How many addresses the block spans, reserved ones included (2^64 for an IPv6 /64). */
export const addressCount = (cidr: Cidr): bigint => 1n << BigInt(cidr.bits - cidr.prefix);

const asCidr = (c: Cidr | string): Cidr => (typeof c === 'string' ? parseCidr(c) : c);
const asAddress = (a: IpAddress | string): IpAddress => (typeof a === 'string' ? parseAddress(a) : a);

/** Whether `address` lies inside `cidr`; an address of the other family never does. */
export function contains(cidr: Cidr | string, address: IpAddress | string): boolean {
  const c = asCidr(cidr);
  const a = asAddress(address);
  return c.version === a.version && (a.value & ~hostMask(c)) === c.network;
}

/** Two blocks overlap exactly when the wider one contains the other's network address. */
export function cidrsOverlap(a: Cidr | string, b: Cidr | string): boolean {
  const x = asCidr(a);
  const y = asCidr(b);
  if (x.version !== y.version) return false;
  const [wide, narrow] = x.prefix <= y.prefix ? [x, y] : [y, x];
  return (narrow.network & ~hostMask(wide)) === wide.network;
}
