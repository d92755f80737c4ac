/**
 * Mesh pairs: every two nodes of a config are linked once, as two directional PeerLinks
 * sharing a linkGroupId.
 *
 * A full mesh of n nodes has n(n-1)/2 pairs, so `mesh.generate` never walks them in
 * JavaScript: it has the database produce them in one INSERT ... SELECT
 * (src/repositories/links.ts) with ids drawn here (meshLinkIds). `linksForPair` states
 * the same rules (a -> b routes b's host address, b -> a routes a's, one linkGroupId)
 * for one pair at a time (link.create), and the mesh.generate test checks the database's
 * rows against it.
 */
import { InvalidError } from './errors.js';
import { randomInt } from 'node:crypto';
import { hostAddressWithPrefix } from './allocation.js';

/** One direction of a pair, as a PeerLink row needs it (the repository adds id and config). */
export interface PeerLinkDraft {
  fromNodeId: string;
  toNodeId: string;
  linkGroupId: string;
  /** The peer's single-host route: what `from` routes to `to` through this link. */
  allowedIps: string[];
  persistentKeepalive: number | null;
}

export interface LinkOptions {
  linkGroupId: string;
  /** A node's address (canonical or not); undefined for an unknown node is an error. */
  addressOf: (nodeId: string) => string | undefined;
  /**
   * PersistentKeepalive in seconds (1-65535), null or 0 for none; per direction when a
   * function (`from` keeps the NAT mapping towards `to` open, so it usually depends on `from`).
   */
  keepalive?: number | null | ((fromNodeId: string, toNodeId: string) => number | null);
}

function keepaliveOf(value: number | null | undefined, from: string, to: string): number | null {
  if (value === null || value === undefined || value === 0) return null;
  if (!Number.isInteger(value) || value < 0 || value > 65535) {
    throw new InvalidError(`persistentKeepalive ${value} of link ${from} -> ${to} is out of range 0-65535`);
  }
  return value;
}

/**
 * The two directional links of the pair {a, b}: a -> b routes b's host address and
 * b -> a routes a's, both under one linkGroupId.
 */
export function linksForPair(a: string, b: string, opts: LinkOptions): [PeerLinkDraft, PeerLinkDraft] {
  if (a === b) throw new InvalidError(`node ${a} cannot be paired with itself`);
  const hostRoute = (nodeId: string): string => {
    const address = opts.addressOf(nodeId);
    if (address === undefined) throw new InvalidError(`node ${nodeId} has no address to route to`);
    return hostAddressWithPrefix(address);
  };
  const link = (from: string, to: string): PeerLinkDraft => {
    const k = opts.keepalive;
    return {
      fromNodeId: from,
      toNodeId: to,
      linkGroupId: opts.linkGroupId,
      allowedIps: [hostRoute(to)],
      persistentKeepalive: keepaliveOf(typeof k === 'function' ? k(from, to) : k, from, to),
    };
  };
  return [link(a, b), link(b, a)];
}

/**
 * Ids for the links of one mesh.generate run, made in SQL as `prefix` followed by 12 hex
 * digits: six of a `from` part and six of a `to` part. They are UUIDv7 (RFC 9562, with
 * the counter method that RFC allows, here 48 bits in two halves): the run's millisecond
 * timestamp, version 7, the variant bits, random bits drawn once per run (the 12 of
 * rand_a, 14 of rand_b, and `fromBase` and `toBase`, 23 each) and the counter. With the
 * config's n nodes numbered 0..n-1 in id order, the link from node i to node j has the
 * parts fromBase + i and toBase + 2j, and the pair's shared linkGroupId fromBase + lo and
 * toBase + 2hi + 1 (lo < hi being i and j in order): links even in the `to` part, groups
 * odd, so ids are distinct within a run by construction; ids sort as (i, j); and a run's
 * ids sort after earlier runs' as newId's do. Neither half carries into the other, so the
 * database builds each node's three pieces once and a row's ids by concatenation
 * (src/repositories/links.ts). Each half stays within its six digits up to 2^22 nodes.
 */
export interface MeshLinkIds {
  prefix: string;
  fromBase: number;
  toBase: number;
}

export function meshLinkIds(now: number = Date.now()): MeshLinkIds {
  const ts = now.toString(16).padStart(12, '0').slice(-12);
  const randA = randomInt(0, 0x1000).toString(16).padStart(3, '0');
  const variantAndRandB = (0x8000 | randomInt(0, 0x4000)).toString(16);
  return {
    prefix: `${ts.slice(0, 8)}-${ts.slice(8)}-7${randA}-${variantAndRandB}-`,
    fromBase: randomInt(0, 2 ** 23),
    toBase: randomInt(0, 2 ** 23),
  };
}
