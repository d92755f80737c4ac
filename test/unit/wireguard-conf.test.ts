import { describe, expect, it } from 'vitest';
import { generateKeyPair } from '../../src/domain/keys.js';
import { renderWireguardConf, type WireguardConfInput } from '../../src/domain/wireguard-conf.js';
import { parseWgIni } from '../support/wg-ini.js';

const own = generateKeyPair();
const peerA = generateKeyPair().publicKey;
const peerB = generateKeyPair().publicKey;

const base: WireguardConfInput = {
  nodeName: 'gw-1',
  configName: 'office',
  protocol: 'wireguard',
  address: '10.60.0.2',
  subnet: '10.60.0.0/24',
  listenPort: 51820,
  privateKey: own.privateKey,
  dns: ['10.60.0.1', '1.1.1.1'],
  mtu: 1420,
  awg: null,
  peers: [
    { name: 'alpha', publicKey: peerA, endpoint: 'alpha.example.com:51820', allowedIps: ['10.60.0.3/32'], persistentKeepalive: 25 },
    { name: 'roamer', publicKey: peerB, endpoint: null, allowedIps: ['10.60.0.4/32', '192.168.7.0/24'], persistentKeepalive: null },
  ],
};

describe('wireguard.conf rendering', () => {
  it('writes a wg-quick file: the interface with its private key, DNS and MTU, and one peer per link', () => {
    const sections = parseWgIni(renderWireguardConf(base));
    expect(sections).toEqual([
      {
        section: 'Interface',
        values: { Address: '10.60.0.2/24', ListenPort: '51820', PrivateKey: own.privateKey, DNS: '10.60.0.1, 1.1.1.1', MTU: '1420' },
      },
      { section: 'Peer', values: { PublicKey: peerA, Endpoint: 'alpha.example.com:51820', AllowedIPs: '10.60.0.3/32', PersistentKeepalive: '25' } },
      // No endpoint: the peer is reached when it connects; no keepalive line for none.
      { section: 'Peer', values: { PublicKey: peerB, AllowedIPs: '10.60.0.4/32, 192.168.7.0/24' } },
    ]);
  });

  it('leaves the private key out, with a comment saying why, when the node holds its own key', () => {
    const text = renderWireguardConf({ ...base, privateKey: null });
    const [iface] = parseWgIni(text);
    expect(iface!.values).not.toHaveProperty('PrivateKey');
    expect(text).toMatch(/^# PrivateKey: this node holds its own key/m);
    expect(text).not.toContain(own.privateKey);
  });

  it('adds the AmneziaWG parameters it has, under their awg-quick names, only for protocol amneziawg', () => {
    const awg = { jc: 4, jmin: 40, jmax: 70, s1: 15, s2: 20, h1: 1111, h2: 2222, h3: 3333, h4: 4444 };
    const [iface] = parseWgIni(renderWireguardConf({ ...base, protocol: 'amneziawg', awg }));
    expect(iface!.values).toMatchObject({ Jc: '4', Jmin: '40', Jmax: '70', S1: '15', S2: '20', H1: '1111', H2: '2222', H3: '3333', H4: '4444' });
    const [partial] = parseWgIni(renderWireguardConf({ ...base, protocol: 'amneziawg', awg: { jc: 3 } }));
    expect(Object.keys(partial!.values).filter((k) => /^(J|S|H)\w*$/.test(k))).toEqual(['Jc']);
    const [plain] = parseWgIni(renderWireguardConf({ ...base, awg }));
    expect(Object.keys(plain!.values)).not.toContain('Jc');
  });

  it('writes an IPv6 node with its subnet prefix and a node without peers as an interface alone', () => {
    const sections = parseWgIni(renderWireguardConf({ ...base, address: 'fd00:60::2', subnet: 'fd00:60::/64', dns: [], peers: [] }));
    expect(sections).toHaveLength(1);
    expect(sections[0]!.values).toMatchObject({ Address: 'fd00:60::2/64' });
    expect(sections[0]!.values).not.toHaveProperty('DNS');
  });
});
