/**
 * The `peers` array of a push as JSON text, written in JavaScript from link rows and the
 * peers they name: how SQLite's pages are written (PostgreSQL writes the same text in its
 * query, `PushContentRepository.peerLists`), and the reference both are tested against.
 * In a full mesh every node is a peer of every other, so a page lists each peer in nearly
 * every message: its part of the JSON is written once per page (`peerPrefix`) and the
 * lists are joined from the pieces. The text is exactly what `JSON.stringify` writes for
 * the same objects (the same keys in the same order), so content hashes do not change
 * (docs/architecture.md, "Config pushes in pages, written from pieces").
 */

/** A peer as every link to it lists it (the link's own fields aside). */
export interface PeerNode {
  nodeId: string;
  name: string;
  publicKey: string;
  endpoint: string | null;
  listenPort: number;
}

/** One outgoing link of a node: which peer, and the link's own fields. */
export interface PeerLinkRow {
  toNodeId: string;
  allowedIps: string[];
  persistentKeepalive: number | null;
}

/** A node's `peers` array as JSON, and how many peers it lists. */
export interface PeerList {
  json: string;
  count: number;
}

export const EMPTY_PEER_LIST: PeerList = { json: '[]', count: 0 };

export class PushTexts {
  private readonly prefixes = new Map<string, string>();

  constructor(private readonly peerNodes: ReadonlyMap<string, PeerNode>) {}

  /** `{"nodeId":…,"listenPort":n` of a peer: everything before the link's own fields. */
  private peerPrefix(peer: PeerNode): string {
    let prefix = this.prefixes.get(peer.nodeId);
    if (prefix === undefined) {
      const text = JSON.stringify({ nodeId: peer.nodeId, name: peer.name, publicKey: peer.publicKey, endpoint: peer.endpoint, listenPort: peer.listenPort });
      prefix = text.slice(0, -1);
      this.prefixes.set(peer.nodeId, prefix);
    }
    return prefix;
  }

  /** The `peers` array as JSON, and how many it lists (links cascade with nodes: every link names a peer). */
  peers(links: readonly PeerLinkRow[]): PeerList {
    // Appended to one string rather than joined from an array of parts: no array of a
    // part per link, and V8 appends in place.
    let json = '[';
    let count = 0;
    for (const link of links) {
      const peer = this.peerNodes.get(link.toNodeId);
      if (!peer) continue;
      json += (count === 0 ? '' : ',') + this.peerPrefix(peer) + ',"allowedIps":' + JSON.stringify(link.allowedIps) + ',"persistentKeepalive":' + JSON.stringify(link.persistentKeepalive) + '}';
      count++;
    }
    return { json: json + ']', count };
  }
}
