/**
 * meshq's MQTT topics and the classification of inbound messages: pure, no I/O, so every
 * hostile shape is a unit test. The link (mqtt-link.ts) does the I/O around it.
 *
 *   meshq/<configId>/<nodeId>/status          agent -> meshq  retained online/offline, last will offline
 *   meshq/<configId>/<nodeId>/config/push     meshq -> agent  desired config (QoS 1, never retained)
 *   meshq/<configId>/<nodeId>/config/applied  agent -> meshq  {"revision": n}
 *   $SYS/brokers/<node>/clients/<clientid>/connected|disconnected   EMQX client events
 */
import { z } from 'zod';

export const STATUS_SUBSCRIPTION = 'meshq/+/+/status';
export const APPLIED_SUBSCRIPTION = 'meshq/+/+/config/applied';
export const SYS_CONNECTED_SUBSCRIPTION = '$SYS/brokers/+/clients/+/connected';
export const SYS_DISCONNECTED_SUBSCRIPTION = '$SYS/brokers/+/clients/+/disconnected';

export const statusTopic = (configId: string, nodeId: string) => `meshq/${configId}/${nodeId}/status`;
export const configPushTopic = (configId: string, nodeId: string) => `meshq/${configId}/${nodeId}/config/push`;
export const configAppliedTopic = (configId: string, nodeId: string) => `meshq/${configId}/${nodeId}/config/applied`;

/** EMQX user names and client ids of agents are `node-<nodeId>` (the broker sync makes them so). */
export const NODE_CLIENT_PREFIX = 'node-';
export const nodeClientId = (nodeId: string) => `${NODE_CLIENT_PREFIX}${nodeId}`;

/** A status is one word. Anything bigger than this is not an agent talking. */
export const MAX_PRESENCE_PAYLOAD_BYTES = 1024;
/**
 * EMQX's client events are JSON objects of a few hundred bytes (addresses, protocol,
 * timestamps, connection properties); this leaves room for large properties while still
 * refusing to parse a flood.
 */
export const MAX_SYS_EVENT_PAYLOAD_BYTES = 8192;

export type PresenceMessage =
  /** `configId` is known for agent statuses, not for EMQX client events. */
  | { kind: 'presence'; nodeId: string; configId: string | null; online: boolean }
  /** Expected traffic that is not a node's presence: logged at debug only. */
  | { kind: 'ignored'; reason: string }
  /** Does not fit the protocol: logged as a warning and dropped. */
  | { kind: 'rejected'; reason: string };

const uuid = z.uuid();
const isUuid = (s: string | undefined): s is string => s !== undefined && uuid.safeParse(s).success;
/** Agents may also send a small JSON object; extra fields (a version, say) are allowed. */
const statusObject = z.object({ status: z.enum(['online', 'offline']) });
/** The part of EMQX's connected/disconnected event payload that says who the client is. */
const sysEvent = z.object({ clientid: z.string(), username: z.string().nullable().optional() });

function statusOf(payload: Buffer): boolean | undefined {
  const text = payload.toString('utf8').trim();
  if (text === 'online') return true;
  if (text === 'offline') return false;
  if (!text.startsWith('{')) return undefined;
  try {
    const parsed = statusObject.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data.status === 'online' : undefined;
  } catch {
    return undefined;
  }
}

function sysEventOf(payload: Buffer): z.infer<typeof sysEvent> | undefined {
  try {
    const parsed = sysEvent.safeParse(JSON.parse(payload.toString('utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Classifies one inbound message. Node ids are lower-cased: ids are stored lowercase, and
 * an agent's upper-case spelling would otherwise be NOT_FOUND.
 *
 * A status topic names its sender: EMQX's per-node rules let a node publish only its own
 * status topic, so the config id is checked for shape only.
 *
 * An EMQX client event counts only when the client's user name equals its client id and
 * that is `node-<nodeId>`. EMQX does not bind client ids to user names: node A may connect
 * with client id `node-<B>` (taking over B's session), and the event would otherwise mark
 * B online or offline. Authentication binds the user name, so requiring both to agree
 * leaves a node able to announce only itself.
 */
export function parsePresenceMessage(topic: string, payload: Buffer): PresenceMessage {
  const levels = topic.split('/');
  if (levels[0] === 'meshq') {
    if (payload.length > MAX_PRESENCE_PAYLOAD_BYTES) {
      return { kind: 'rejected', reason: `payload of ${payload.length} bytes exceeds ${MAX_PRESENCE_PAYLOAD_BYTES}` };
    }
    const [, configId, nodeId, leaf] = levels;
    if (levels.length !== 4 || leaf !== 'status') return { kind: 'rejected', reason: 'not a status topic' };
    if (!isUuid(configId) || !isUuid(nodeId)) return { kind: 'rejected', reason: 'config or node id is not a UUID' };
    // Publishing an empty retained message is how a retained status is cleared.
    if (payload.length === 0) return { kind: 'ignored', reason: 'retained status cleared' };
    const online = statusOf(payload);
    if (online === undefined) return { kind: 'rejected', reason: 'status is not "online", "offline" or {"status": ...}' };
    return { kind: 'presence', nodeId: nodeId.toLowerCase(), configId: configId.toLowerCase(), online };
  }
  if (levels[0] === '$SYS') {
    if (payload.length > MAX_SYS_EVENT_PAYLOAD_BYTES) {
      return { kind: 'rejected', reason: `payload of ${payload.length} bytes exceeds ${MAX_SYS_EVENT_PAYLOAD_BYTES}` };
    }
    const [, brokers, , clients, clientId, event] = levels;
    if (levels.length !== 6 || brokers !== 'brokers' || clients !== 'clients' || (event !== 'connected' && event !== 'disconnected')) {
      return { kind: 'rejected', reason: 'not a client event topic' };
    }
    // Other clients (this backend, dashboards, bridges) come and go too: not ours to track.
    if (!clientId?.startsWith(NODE_CLIENT_PREFIX)) return { kind: 'ignored', reason: 'not an agent client' };
    const nodeId = clientId.slice(NODE_CLIENT_PREFIX.length);
    if (!isUuid(nodeId)) return { kind: 'rejected', reason: 'agent client id does not end in a UUID' };
    const body = sysEventOf(payload);
    if (!body) return { kind: 'ignored', reason: 'client event without a readable clientid and username' };
    if (body.clientid !== clientId) return { kind: 'ignored', reason: 'client event whose clientid differs from its topic' };
    if (body.username !== clientId) return { kind: 'ignored', reason: 'client event whose username differs from its client id' };
    return { kind: 'presence', nodeId: nodeId.toLowerCase(), configId: null, online: event === 'connected' };
  }
  return { kind: 'rejected', reason: 'unexpected topic' };
}

/** An acknowledgement is `{"revision": n}`, perhaps with a few more fields: never more than this. */
export const MAX_APPLIED_PAYLOAD_BYTES = 1024;

export type AppliedMessage =
  | { kind: 'applied'; configId: string; nodeId: string; revision: number }
  /** Does not fit the protocol: logged as a warning and dropped. */
  | { kind: 'rejected'; reason: string };

/** Revisions are counted from 1 and stored as a 32-bit integer. */
const appliedBody = z.looseObject({ revision: z.number().int().min(1).max(2_147_483_647) });

/** Whether `topic` is an agent's acknowledgement topic (any ids): the link routes by this. */
export function isAppliedTopic(topic: string): boolean {
  const levels = topic.split('/');
  return levels.length === 5 && levels[0] === 'meshq' && levels[3] === 'config' && levels[4] === 'applied';
}

/**
 * Classifies an agent's acknowledgement `{"revision": n}` on
 * `meshq/<configId>/<nodeId>/config/applied`. Whether meshq ever issued that revision is
 * not for this pure check to say: the recorder compares it with the node's state. EMQX's
 * per-node rules let a node publish only its own acknowledgement topic, so the topic
 * names the sender.
 */
export function parseAppliedMessage(topic: string, payload: Buffer): AppliedMessage {
  if (!isAppliedTopic(topic)) return { kind: 'rejected', reason: 'not an acknowledgement topic' };
  if (payload.length > MAX_APPLIED_PAYLOAD_BYTES) {
    return { kind: 'rejected', reason: `payload of ${payload.length} bytes exceeds ${MAX_APPLIED_PAYLOAD_BYTES}` };
  }
  const [, configId, nodeId] = topic.split('/');
  if (!isUuid(configId) || !isUuid(nodeId)) return { kind: 'rejected', reason: 'config or node id is not a UUID' };
  let json: unknown;
  try {
    json = JSON.parse(payload.toString('utf8'));
  } catch {
    return { kind: 'rejected', reason: 'acknowledgement is not JSON' };
  }
  const parsed = appliedBody.safeParse(json);
  if (!parsed.success) return { kind: 'rejected', reason: 'acknowledgement is not {"revision": <integer from 1>}' };
  return { kind: 'applied', configId: configId.toLowerCase(), nodeId: nodeId.toLowerCase(), revision: parsed.data.revision };
}
