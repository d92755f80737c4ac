/**
 * `node.push-config`: publishes a node's desired WireGuard / AmneziaWG configuration to
 * its agent on `meshq/<configId>/<nodeId>/config/push` (QoS 1, not retained).
 *
 * What the message carries, and why:
 * - The node's own interface: address, the config's subnet, its effective listen port,
 *   DNS, protocol, AmneziaWG parameters, its public key and its OWN private key. meshq
 *   generates every node's key pair (node.create) and no operation lets an agent register
 *   a key of its own, so the agent can only run the interface its peers expect with the
 *   key meshq holds; NodeRepository.privateKey exists for this push alone. It is never
 *   retained on the broker, never in job data, results or logs, and EMQX's rules let only
 *   that node read its topic. That last part holds only if EMQX denies what no rule
 *   allows, so before a message with a private key is published meshq checks EMQX's
 *   authorization settings (src/broker/authorization.ts); when they would let others
 *   read it, the push fails permanently with BROKER_INSECURE.
 * - Per outgoing link the peer's public key, endpoint, listen port, allowed IPs and
 *   keepalive. Never another node's private key.
 *
 * Revisions: each push carries `revision`, which goes up by one only when the content
 * (everything but `generatedAt` and the private key) changes; its hash is kept per node
 * (node_sync). A push whose content equals the last published one publishes nothing, so
 * a change that alters nothing for a node costs it no message. The publish happens inside
 * the job's transaction and the new revision commits only after the broker acknowledged
 * it (see pushConfig): at-least-once, with the job's capped backoff (its job table row)
 * until the broker takes it, each retry re-reading the newest state.
 *
 * Who asks: every job that changes what some dynamic node runs calls requestPushes
 * (src/jobs/pushes.ts), coalesced per node. Static nodes are managed by hand and have no
 * agent: they get no push, and asking for one is INVALID.
 */
import { createHash } from 'node:crypto';
import { BrokerInsecureError, InvalidError, MqttDisabledError } from '../../domain/errors.js';
import type { Repositories } from '../../repositories/index.js';
import type { AwgParams, TunnelProtocol } from '../../domain/validation.js';
import { AuthorizationVerdicts } from '../../broker/authorization.js';
import { CHECK_CLIENT_TUNING, createEmqxClient } from '../../broker/emqx.js';
import { MqttNotConnectedError } from '../../broker/mqtt-link.js';
import { configPushTopic } from '../../broker/topics.js';
import type { JobContext } from '../context.js';
import type { NodePushConfig } from '../payloads.js';

export const CONFIG_PUSH_FORMAT_VERSION = 1;

export interface PushedPeer {
  nodeId: string;
  name: string;
  publicKey: string;
  /** `host:port`, or null when the peer has none (it is reached when it connects). */
  endpoint: string | null;
  listenPort: number;
  allowedIps: string[];
  persistentKeepalive: number | null;
}

export interface PushedConfig {
  version: typeof CONFIG_PUSH_FORMAT_VERSION;
  configId: string;
  nodeId: string;
  generatedAt: string;
  interface: {
    name: string;
    address: string;
    subnet: string;
    listenPort: number;
    publicKey: string;
    /** Absent when the node's agent holds its own key (key mode `agent`). */
    privateKey?: string;
    dns: string[];
    protocol: TunnelProtocol;
    awg: AwgParams | null;
  };
  peers: PushedPeer[];
}

/** What the agent receives: the desired configuration and its revision. */
export interface PushMessage extends PushedConfig {
  /**
   * Goes up by one each time the content changes; the agent acknowledges it on
   * `meshq/<configId>/<nodeId>/config/applied` with `{"revision": n}`.
   */
  revision: number;
}

export interface PushConfigResult {
  nodeId: string;
  topic?: string;
  /** How many peers the pushed configuration lists. */
  peers?: number;
  /** The node's desired revision after this job. */
  revision?: number;
  /** False when nothing was published: the content had not changed, or the node is gone. */
  pushed: boolean;
  reason?: 'unchanged' | 'node deleted';
}

/** A node's desired configuration as its agent receives it, read through the repositories. */
export async function desiredNodeConfig(repos: Repositories, nodeId: string): Promise<PushedConfig> {
  const node = await repos.nodes.require(nodeId);
  if (node.kind !== 'dynamic') {
    throw new InvalidError(`node "${node.name}" (${node.id}) is static: it has no agent to push a configuration to`);
  }
  const config = await repos.configs.require(node.configId);
  const links = await repos.links.fromNode(node.id);
  const peersById = new Map((await repos.nodes.getMany(links.map((l) => l.toNodeId))).map((p) => [p.id, p]));
  const peers = links.flatMap((link): PushedPeer[] => {
    const peer = peersById.get(link.toNodeId);
    // Links cascade with their nodes, so a missing peer cannot be read in one transaction.
    if (!peer) return [];
    return [
      {
        nodeId: peer.id,
        name: peer.name,
        publicKey: peer.publicKey,
        endpoint: peer.endpoint,
        listenPort: peer.listenPort ?? config.listenPort,
        allowedIps: link.allowedIps,
        persistentKeepalive: link.persistentKeepalive,
      },
    ];
  });
  const privateKey = await repos.nodes.privateKey(node.id);
  return {
    version: CONFIG_PUSH_FORMAT_VERSION,
    configId: config.id,
    nodeId: node.id,
    generatedAt: new Date().toISOString(),
    interface: {
      name: node.name,
      address: node.address,
      subnet: config.subnet,
      listenPort: node.listenPort ?? config.listenPort,
      publicKey: node.publicKey,
      ...(privateKey === null ? {} : { privateKey }),
      dns: config.dns,
      protocol: config.protocol,
      awg: config.awg,
    },
    peers,
  };
}

/** This process's memory of EMQX's last good authorization verdict. */
const authorizationVerdicts = new AuthorizationVerdicts();

/**
 * sha256 of what the agent is told, without the moment it was generated and without the
 * private key: the public key beside it changes with it, and no digest of a secret is kept.
 */
export function pushContentHash(message: PushedConfig): string {
  const { generatedAt: _at, interface: iface, ...rest } = message;
  const { privateKey: _key, ...publicInterface } = iface;
  return createHash('sha256').update(JSON.stringify({ ...rest, interface: publicInterface })).digest('hex');
}

export async function pushConfig(data: NodePushConfig, ctx: JobContext): Promise<PushConfigResult> {
  if (!ctx.config.mqtt.enabled) throw new MqttDisabledError('pushing a node configuration');
  const mqtt = ctx.mqtt;
  // A node deleted after its push was requested has nobody left to tell: nothing to do.
  if (!(await ctx.repos.nodes.get(data.nodeId))) return { nodeId: data.nodeId, pushed: false, reason: 'node deleted' };

  const message = await desiredNodeConfig(ctx.repos, data.nodeId);
  const topic = configPushTopic(message.configId, message.nodeId);
  const contentHash = pushContentHash(message);
  const published = await ctx.repos.nodeSync.published(message.nodeId);
  const base = { nodeId: message.nodeId, topic, peers: message.peers.length };
  // Nothing the agent runs would change: no new revision and no message.
  if (published?.contentHash === contentHash) return { ...base, revision: published.revision, pushed: false, reason: 'unchanged' };

  // Infrastructure, not the request's fault: thrown as plain errors, so the job retries
  // with its row's capped backoff and reads the (maybe newer) state again next time.
  if (!mqtt) throw new Error('MQTT is enabled but this worker has no MQTT link');
  if (!mqtt.connected) throw new MqttNotConnectedError();
  if (message.interface.privateKey) {
    const verdict = await authorizationVerdicts.verdict(ctx.config.emqx.apiUrl, () => createEmqxClient(ctx.config, CHECK_CLIENT_TUNING, ctx.log));
    if (!verdict.ok) throw new BrokerInsecureError(verdict.reason);
  }
  const revision = (published?.revision ?? 0) + 1;
  const body = JSON.stringify({ ...message, revision } satisfies PushMessage);
  await ctx.repos.nodeSync.recordPublished(message.nodeId, revision, contentHash, new Date());
  // Published inside the transaction, on purpose: the new revision commits only once the
  // broker acknowledged the message, and a publish that fails rolls it back, so the retry
  // computes it again from the newest state (a revision is recorded iff it was sent).
  // The price is one broker round trip (bounded by the link's publish timeout) while the
  // transaction is open; pushes coalesce per node, so there are few of them.
  await mqtt.publish(topic, body, { qos: 1, retain: false });
  ctx.log.info({ nodeId: message.nodeId, topic, revision, peers: message.peers.length }, 'configuration pushed');
  return { ...base, revision, pushed: true };
}
