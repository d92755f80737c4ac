/**
 * Node addresses inside a config's subnet.
 *
 * Which addresses a node may get:
 * - IPv4 up to /30: everything but the network (all-zero host) and broadcast (all-ones
 *   host) addresses.
 * - IPv4 /31: both addresses. RFC 3021 point-to-point links have no network or broadcast
 *   address; a two-node mesh on a /31 is what someone choosing a /31 means.
 * - IPv4 /32: the single address. A one-node "mesh" is useless but not wrong, and refusing
 *   it would make the /32 edge an error that nobody can act on except by widening it.
 * - IPv6 up to /126: everything but the subnet-router anycast address (all-zero host,
 *   RFC 4291 §2.6.1). IPv6 has no broadcast, so the last address is usable. The reserved
 *   subnet anycast addresses of RFC 2526 (the top 128 of a /64) are not skipped: lowest-first
 *   allocation would reach them only after 2^64 - 128 nodes.
 * - IPv6 /127: both addresses (RFC 6164 point-to-point, no anycast address).
 * - IPv6 /128: the single address.
 *
 * Allocation is lowest-free-first, so addresses are predictable and compact. The scan
 * starts at the first usable address and skips only addresses that are taken, so it costs
 * O(taken) even in a /64; it never enumerates the subnet.
 */
import { ConflictError, InvalidError } from './errors.js';
import {
  bitsOf,
  contains,
  formatAddress,
  formatCidr,
  lastAddress,
  parseAddress,
  parseCidr,
  type Cidr,
  type IpVersion,
} from './cidr.js';

export interface UsableRange {
  readonly first: bigint;
  readonly last: bigint;
}

/** The first and last address a node may get in `subnet` (see the module comment). */
export function usableRange(subnet: Cidr): UsableRange {
  const last = lastAddress(subnet);
  const hostBits = subnet.bits - subnet.prefix;
  if (hostBits <= 1) return { first: subnet.network, last };
  return { first: subnet.network + 1n, last: subnet.version === 4 ? last - 1n : last };
}

export type ReservedKind = 'network' | 'broadcast' | 'subnet-router anycast';

/** Why an address inside `subnet` cannot be given to a node, or undefined when it can. */
export function reservedKind(subnet: Cidr, value: bigint): ReservedKind | undefined {
  const { first, last } = usableRange(subnet);
  if (value < first) return subnet.version === 4 ? 'network' : 'subnet-router anycast';
  if (value > last) return 'broadcast';
  return undefined;
}

const configSuffix = (configName: string | undefined) => (configName === undefined ? '' : ` of config "${configName}"`);
const asSubnet = (subnet: Cidr | string): Cidr => (typeof subnet === 'string' ? parseCidr(subnet, 'subnet') : subnet);

/**
 * The taken addresses that matter, as numbers: parsing each once means callers may pass
 * stored strings in any spelling, and membership tests cost no formatting. Entries that are
 * not addresses or lie outside the subnet (left over from an earlier subnet) cannot collide
 * with an allocation, so they are ignored rather than failing the allocation.
 */
function takenValues(subnet: Cidr, taken: Iterable<string>): Set<bigint> {
  const values = new Set<bigint>();
  for (const s of taken) {
    let value: bigint;
    try {
      const a = parseAddress(s);
      if (a.version !== subnet.version) continue;
      value = a.value;
    } catch {
      continue;
    }
    values.add(value);
  }
  return values;
}

export interface AllocateOptions {
  /** Named in error messages: `subnet 10.0.0.0/30 of config "home" has no free address`. */
  configName?: string;
}

/**
 * Hands out the lowest free addresses one after another. Use one allocator for a batch
 * (creating many nodes in one job): the cursor only moves forward, so n allocations cost
 * O(n + taken) instead of O(n · taken).
 */
export class AddressAllocator {
  readonly subnet: Cidr;
  private readonly taken: Set<bigint>;
  private readonly range: UsableRange;
  private cursor: bigint;
  private readonly configName: string | undefined;

  constructor(subnet: Cidr | string, taken: Iterable<string>, opts: AllocateOptions = {}) {
    this.subnet = asSubnet(subnet);
    this.taken = takenValues(this.subnet, taken);
    this.range = usableRange(this.subnet);
    this.cursor = this.range.first;
    this.configName = opts.configName;
  }

  /** The lowest free address, now counted as taken. ConflictError when none is left. */
  next(): string {
    while (this.cursor <= this.range.last && this.taken.has(this.cursor)) this.cursor++;
    if (this.cursor > this.range.last) {
      throw new ConflictError(
        `subnet ${formatCidr(this.subnet)}${configSuffix(this.configName)} has no free address`,
        { subnet: formatCidr(this.subnet), configName: this.configName },
      );
    }
    const value = this.cursor;
    this.taken.add(value);
    this.cursor++;
    return formatAddress({ version: this.subnet.version, value });
  }

  /** Counts an address as taken (e.g. one a user asked for explicitly within the same batch). */
  take(address: string): void {
    const a = parseAddress(address, 'address');
    if (a.version === this.subnet.version) this.taken.add(a.value);
  }
}

/** The lowest free node address in `subnet`, canonical. ConflictError when the subnet is full. */
export function allocateAddress(subnet: Cidr | string, taken: Iterable<string>, opts: AllocateOptions = {}): string {
  return new AddressAllocator(subnet, taken, opts).next();
}

/**
 * Checks an address a user asked for and returns it canonical. InvalidError when it is not
 * an address, of the other family, outside the subnet, or reserved; ConflictError when
 * another node has it. When a node keeps its own address on update, leave that address out
 * of `taken`.
 */
export function validateRequestedAddress(
  subnet: Cidr | string,
  address: string,
  taken: Iterable<string>,
  configName?: string,
): string {
  const net = asSubnet(subnet);
  const a = parseAddress(address, 'address');
  const canonical = formatAddress(a);
  const where = `subnet ${formatCidr(net)}${configSuffix(configName)}`;
  if (a.version !== net.version) {
    throw new InvalidError(`address ${canonical} is IPv${a.version} but ${where} is IPv${net.version}`);
  }
  if (!contains(net, a)) {
    throw new InvalidError(`address ${canonical} is outside ${where}`);
  }
  const reserved = reservedKind(net, a.value);
  if (reserved) {
    const { first, last } = usableRange(net);
    const bound =
      reserved === 'broadcast'
        ? `the last usable address is ${formatAddress({ version: net.version, value: last })}`
        : `the first usable address is ${formatAddress({ version: net.version, value: first })}`;
    throw new InvalidError(`address ${canonical} is the ${reserved} address of ${where}; ${bound}`);
  }
  if (takenValues(net, taken).has(a.value)) {
    throw new ConflictError(`address ${canonical} is already taken in ${where}`, { address: canonical, configName });
  }
  return canonical;
}

/**
 * A node's address as a single-host route for a peer's AllowedIPs: "10.0.0.2/32",
 * "fd00::2/128". `version`, when given, must match the address (a guard for callers that
 * know the config's family).
 */
export function hostAddressWithPrefix(address: string, version?: IpVersion): string {
  const a = parseAddress(address, 'address');
  if (version !== undefined && a.version !== version) {
    throw new InvalidError(`address ${formatAddress(a)} is IPv${a.version}, expected an IPv${version} address`);
  }
  return `${formatAddress(a)}/${bitsOf(a.version)}`;
}
