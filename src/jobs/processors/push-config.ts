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
 * The job's transaction only reads. The publish runs after commit, outside it: waiting for
 * the broker's acknowledgement inside would hold the process's SQLite writer (or a
 * PostgreSQL connection) on the broker's pace. When the broker is down the job fails and
 * is retried, re-reading the desired state each time, rather than queueing a stale copy.
 *
 * Follow-ups: mesh.generate pushes to the dynamic nodes of its config, and a broker sync
 * that applies a new data epoch (a restore) pushes to every dynamic node
 * (`pushAllDynamicNodes`). Static nodes are managed by hand and have no agent: they get
 * no push, and asking for one is INVALID.
 */
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
    privateKey: string;
    dns: string[];
    protocol: TunnelProtocol;
    awg: AwgParams | null;
  };
  peers: PushedPeer[];
}

export interface PushConfigResult {
  nodeId: string;
  topic: string;
  /** How many peers the pushed configuration lists. */
  peers: number;
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
      privateKey: await repos.nodes.privateKey(node.id),
      dns: config.dns,
      protocol: config.protocol,
      awg: config.awg,
    },
    peers,
  };
}

/** This process's memory of EMQX's last good authorization verdict. */
const authorizationVerdicts = new AuthorizationVerdicts();

export async function pushConfig(data: NodePushConfig, ctx: JobContext): Promise<PushConfigResult> {
  if (!ctx.config.mqtt.enabled) throw new MqttDisabledError('pushing a node configuration');
  const mqtt = ctx.mqtt;
  // Infrastructure, not the request's fault: thrown as plain errors, so the job retries.
  if (!mqtt) throw new Error('MQTT is enabled but this worker has no MQTT link');
  if (!mqtt.connected) throw new MqttNotConnectedError();

  const message = await desiredNodeConfig(ctx.repos, data.nodeId);
  if (message.interface.privateKey) {
    const verdict = await authorizationVerdicts.verdict(ctx.config.emqx.apiUrl, () => createEmqxClient(ctx.config, CHECK_CLIENT_TUNING, ctx.log));
    if (!verdict.ok) throw new BrokerInsecureError(verdict.reason);
  }
  const topic = configPushTopic(message.configId, message.nodeId);
  const body = JSON.stringify(message);
  ctx.afterCommit(async () => {
    await mqtt.publish(topic, body, { qos: 1, retain: false });
    ctx.log.info({ nodeId: message.nodeId, topic, peers: message.peers.length }, 'configuration pushed');
  });
  return { nodeId: message.nodeId, topic, peers: message.peers.length };
}

