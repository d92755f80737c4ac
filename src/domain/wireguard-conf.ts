/**
 * A node's configuration as a wg-quick(8) file, or an awg-quick file for AmneziaWG: the
 * way a node without an agent (a static node, a router, a phone) gets what meshq holds
 * for it. Pure: the caller reads the node, its config and its outgoing links.
 *
 * - `[Interface]`: Address (the node's address with the config subnet's prefix, so the
 *   whole mesh routes through the interface), ListenPort, PrivateKey when meshq holds it,
 *   DNS, MTU and, for AmneziaWG, the obfuscation parameters (Jc, Jmin, Jmax, S1, S2,
 *   H1-H4) that every peer of the config must share.
 * - One `[Peer]` per outgoing link: the peer's PublicKey, Endpoint (when it has one: a
 *   peer without one is reached when it connects), AllowedIPs and PersistentKeepalive.
 *
 * A node whose agent holds its own key gets no PrivateKey line: meshq has none. A comment
 * marks where the operator puts the key, so the file parses and says why it is missing.
 * Every value written here was validated on its way in (names, endpoints, CIDRs, keys),
 * so none can carry a line break into the file.
 */
import type { AwgParams, TunnelProtocol } from './validation.js';

export interface WireguardConfPeer {
  name: string;
  publicKey: string;
  /** `host:port`, or null when the peer has no fixed endpoint. */
  endpoint: string | null;
  allowedIps: readonly string[];
  persistentKeepalive: number | null;
}

export interface WireguardConfInput {
  nodeName: string;
  configName: string;
  protocol: TunnelProtocol;
  /** The node's address and the config's subnet (its prefix length goes on Address). */
  address: string;
  subnet: string;
  listenPort: number;
  /** Null when the node's agent (or its operator) holds the private key. */
  privateKey: string | null;
  dns: readonly string[];
  mtu: number;
  awg: AwgParams | null;
  peers: readonly WireguardConfPeer[];
}

/** amneziawg's spelling of each parameter, in the order its documentation lists them. */
const AWG_KEYS: readonly (readonly [keyof AwgParams, string])[] = [
  ['jc', 'Jc'],
  ['jmin', 'Jmin'],
  ['jmax', 'Jmax'],
  ['s1', 'S1'],
  ['s2', 'S2'],
  ['h1', 'H1'],
  ['h2', 'H2'],
  ['h3', 'H3'],
  ['h4', 'H4'],
];

const prefixOf = (subnet: string): string => subnet.slice(subnet.lastIndexOf('/') + 1);

export function renderWireguardConf(input: WireguardConfInput): string {
  const lines: string[] = [
    `# ${input.protocol === 'amneziawg' ? 'AmneziaWG (awg-quick)' : 'WireGuard (wg-quick)'} configuration of node "${input.nodeName}" in config "${input.configName}", written by meshq`,
    '[Interface]',
    `Address = ${input.address}/${prefixOf(input.subnet)}`,
    `ListenPort = ${input.listenPort}`,
  ];
  if (input.privateKey !== null) lines.push(`PrivateKey = ${input.privateKey}`);
  else lines.push("# PrivateKey: this node holds its own key and meshq has none; add the node's private key here");
  if (input.dns.length > 0) lines.push(`DNS = ${input.dns.join(', ')}`);
  lines.push(`MTU = ${input.mtu}`);
  if (input.protocol === 'amneziawg' && input.awg) {
    for (const [key, name] of AWG_KEYS) {
      const value = input.awg[key];
      if (value !== undefined) lines.push(`${name} = ${value}`);
    }
  }
  for (const peer of input.peers) {
    lines.push('', `# ${peer.name}`, '[Peer]', `PublicKey = ${peer.publicKey}`);
    if (peer.endpoint !== null) lines.push(`Endpoint = ${peer.endpoint}`);
    lines.push(`AllowedIPs = ${peer.allowedIps.join(', ')}`);
    if (peer.persistentKeepalive !== null && peer.persistentKeepalive > 0) lines.push(`PersistentKeepalive = ${peer.persistentKeepalive}`);
  }
  return `${lines.join('\n')}\n`;
}
