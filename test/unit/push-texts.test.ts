/**
 * Pushes are written from pieces (each peer's part once per page), not by JSON.stringify
 * of the whole message: the text must still be exactly JSON.stringify's, so agents parse
 * the same message and content hashes recorded before stay valid.
 */
import { describe, expect, it } from 'vitest';
import { contentHashOf, contentText, messageText, pushContentHash, type PushMessage } from '../../src/jobs/processors/push-config.js';
import { createHash } from 'node:crypto';
import { PushTexts, type PeerNode } from '../../src/repositories/peer-list-json.js';
import type { PushInterface } from '../../src/repositories/push-content.js';

const peers: PeerNode[] = [
  { nodeId: '0194a1b2-c3d4-7e5f-8a6b-000000000002', name: 'b "quoted" \\ node', publicKey: 'B'.repeat(43) + '=', endpoint: null, listenPort: 51820 },
  { nodeId: '0194a1b2-c3d4-7e5f-8a6b-000000000003', name: 'ç-ü', publicKey: 'C'.repeat(43) + '=', endpoint: '[2001:db8::7]:51000', listenPort: 51000 },
];
const links = [
  { toNodeId: peers[1]!.nodeId, allowedIps: ['10.0.0.3/32', 'fd00::3/128'], persistentKeepalive: 25 },
  { toNodeId: peers[0]!.nodeId, allowedIps: ['10.0.0.2/32'], persistentKeepalive: null },
];

describe('push texts built from pieces', () => {
  for (const privateKey of ['A'.repeat(43) + '=', null]) {
    it(`equal JSON.stringify of the message and hash like pushContentHash (${privateKey ? 'server-held key' : 'agent-held key'})`, () => {
      const iface: PushInterface = {
        nodeId: '0194a1b2-c3d4-7e5f-8a6b-000000000001',
        configId: '0194a1b2-c3d4-7e5f-8a6b-00000000000c',
        kind: 'dynamic',
        name: 'a',
        address: '10.0.0.1',
        subnet: '10.0.0.0/24',
        listenPort: 51820,
        publicKey: 'P'.repeat(43) + '=',
        privateKey,
        dns: ['10.0.0.53'],
        protocol: 'amneziawg',
        awg: { jc: 4, jmin: 40, jmax: 70, s1: 0, s2: 0, h1: 1, h2: 2, h3: 3, h4: 4 } as PushInterface['awg'],
      };
      const texts = new PushTexts(new Map(peers.map((p) => [p.nodeId, p])));
      const built = texts.peers(links);
      const expected: PushMessage = {
        version: 1,
        configId: iface.configId,
        nodeId: iface.nodeId,
        generatedAt: '2026-12-01T12:00:00.000Z',
        interface: {
          name: iface.name,
          address: iface.address,
          subnet: iface.subnet,
          listenPort: iface.listenPort,
          publicKey: iface.publicKey,
          ...(privateKey ? { privateKey } : {}),
          dns: iface.dns,
          protocol: iface.protocol,
          awg: iface.awg,
        },
        peers: links.map((l) => ({ ...peers.find((p) => p.nodeId === l.toNodeId)!, allowedIps: l.allowedIps, persistentKeepalive: l.persistentKeepalive })),
        revision: 7,
      };
      expect(built.count).toBe(2);
      expect(messageText(iface, built.json, expected.generatedAt, 7)).toBe(JSON.stringify(expected));
      const { revision: _r, ...config } = expected;
      expect(createHash('sha256').update(contentText(iface, built.json)).digest('hex')).toBe(pushContentHash(config));
      expect(contentHashOf(iface, built.json)).toBe(pushContentHash(config));
      // A second message of the page reuses the peers' pieces and is written the same.
      expect(texts.peers(links).json).toBe(built.json);
    });
  }
});
