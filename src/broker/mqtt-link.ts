/**
 * The worker process's one MQTT connection (DESIGN section 6, MQTT bullet).
 *
 * Inbound it turns presence into `node.presence` jobs: agents publish a retained
 * `online`/`offline` on `meshq/<configId>/<nodeId>/status` with an `offline` last will,
 * and EMQX announces `$SYS/brokers/<node>/clients/<clientid>/connected|disconnected`.
 * Outbound it publishes config pushes for `node.push-config`.
 *
 * Every worker process holds its own connection and subscription, so every process sees
 * every presence message. Jobs get an id derived from node, state and the second the
 * message arrived, so the processes' copies of one message collapse into one job; the
 * copies that slip through (a second boundary between two processes) are harmless,
 * because the processor ignores events older than the recorded one.
 *
 * Nothing a client sends can crash the process: every message is parsed defensively, and
 * what does not fit is logged (topic, size and a short prefix, never the whole payload)
 * and dropped.
 */
import { randomBytes } from 'node:crypto';
import { connect, Store, type IClientOptions, type MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { z } from 'zod';
import { redactUrl, type Config } from '../config.js';
import type { JobQueues } from '../jobs/queue-client.js';
import { requestBrokerSync } from '../jobs/broker-requests.js';

/** What processors see of the link: enough to publish, nothing to subscribe with. */
export interface MqttPublisher {
  /** Whether the broker connection is up right now. */
  readonly connected: boolean;
  /** Resolves on the broker's acknowledgement (PUBACK at QoS 1); rejects when not connected. */
  publish(topic: string, payload: string | Buffer, opts?: { qos?: 0 | 1; retain?: boolean }): Promise<void>;
}

/* ------------------------------------------------------------------ topics */

export const STATUS_SUBSCRIPTION = 'meshq/+/+/status';
export const SYS_CONNECTED_SUBSCRIPTION = '$SYS/brokers/+/clients/+/connected';
export const SYS_DISCONNECTED_SUBSCRIPTION = '$SYS/brokers/+/clients/+/disconnected';

export const statusTopic = (configId: string, nodeId: string) => `meshq/${configId}/${nodeId}/status`;
export const configPushTopic = (configId: string, nodeId: string) => `meshq/${configId}/${nodeId}/config/push`;

/** EMQX user names and client ids of agents are `node-<nodeId>` (see the broker sync). */
const NODE_CLIENT_PREFIX = 'node-';

/**
 * A status is one word. Anything bigger than this is not an agent talking, and $SYS
 * event payloads (which we do not read) stay well below it too.
 */
export const MAX_PRESENCE_PAYLOAD_BYTES = 1024;

/** Why a sync is requested when the connection comes (back) up. */
export const MQTT_CONNECTED_SYNC_REASON = 'MQTT connection (re)established';

/* ----------------------------------------------------------------- parsing */

export type PresenceMessage =
  | { kind: 'presence'; nodeId: string; online: boolean }
  /** Expected traffic that is not a node's presence: logged at debug only. */
  | { kind: 'ignored'; reason: string }
  /** Does not fit the protocol: logged as a warning and dropped. */
  | { kind: 'rejected'; reason: string };

const uuid = z.uuid();
const isUuid = (s: string | undefined): s is string => s !== undefined && uuid.safeParse(s).success;
/** Agents may also send a small JSON object; extra fields (a version, say) are allowed. */
const statusObject = z.object({ status: z.enum(['online', 'offline']) });

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

/**
 * Classifies one inbound message. Pure, so every hostile shape is unit-tested. Node ids
 * are lower-cased: ids are stored lowercase, and an agent's upper-case spelling would
 * otherwise be NOT_FOUND.
 *
 * The config id in a status topic is checked for shape only: EMQX's rules let a node
 * touch nothing but `meshq/<its config>/<itself>/#`, so the node id identifies the sender.
 */
export function parsePresenceMessage(topic: string, payload: Buffer): PresenceMessage {
  if (payload.length > MAX_PRESENCE_PAYLOAD_BYTES) {
    return { kind: 'rejected', reason: `payload of ${payload.length} bytes exceeds ${MAX_PRESENCE_PAYLOAD_BYTES}` };
  }
  const levels = topic.split('/');
  if (levels[0] === 'meshq') {
    const [, configId, nodeId, leaf] = levels;
    if (levels.length !== 4 || leaf !== 'status') return { kind: 'rejected', reason: 'not a status topic' };
    if (!isUuid(configId) || !isUuid(nodeId)) return { kind: 'rejected', reason: 'config or node id is not a UUID' };
    // Publishing an empty retained message is how a retained status is cleared.
    if (payload.length === 0) return { kind: 'ignored', reason: 'retained status cleared' };
    const online = statusOf(payload);
    if (online === undefined) return { kind: 'rejected', reason: 'status is not "online", "offline" or {"status": ...}' };
    return { kind: 'presence', nodeId: nodeId.toLowerCase(), online };
  }
  if (levels[0] === '$SYS') {
    const [, brokers, , clients, clientId, event] = levels;
    if (levels.length !== 6 || brokers !== 'brokers' || clients !== 'clients' || (event !== 'connected' && event !== 'disconnected')) {
      return { kind: 'rejected', reason: 'not a client event topic' };
    }
    // Other clients (this backend, dashboards, bridges) come and go too: not ours to track.
    if (!clientId?.startsWith(NODE_CLIENT_PREFIX)) return { kind: 'ignored', reason: 'not an agent client' };
    const nodeId = clientId.slice(NODE_CLIENT_PREFIX.length);
    if (!isUuid(nodeId)) return { kind: 'rejected', reason: 'agent client id does not end in a UUID' };
    return { kind: 'presence', nodeId: nodeId.toLowerCase(), online: event === 'connected' };
  }
  return { kind: 'rejected', reason: 'unexpected topic' };
}

/**
 * `presence-<nodeId>-<online|offline>-<epochSecond>[-<n>]`. The n-th repeat of the same
 * state within one second gets a suffix, so online/offline/online inside a second stays
 * three jobs instead of the third being mistaken for a copy of the first; every process
 * sees one topic's messages in the same order, so their ids still agree.
 */
export class PresenceJobIds {
  private second = -1;
  private readonly seen = new Map<string, number>();

  next(nodeId: string, online: boolean, at: Date): string {
    const second = Math.floor(at.getTime() / 1000);
    if (second !== this.second) {
      this.second = second;
      this.seen.clear();
    }
    const base = `presence-${nodeId}-${online ? 'online' : 'offline'}-${second}`;
    const n = (this.seen.get(base) ?? 0) + 1;
    this.seen.set(base, n);
    return n === 1 ? base : `${base}-${n}`;
  }
}

/* -------------------------------------------------------------------- link */

export interface MqttLinkOptions {
  /** First reconnect delay; doubles per failed attempt up to `maxReconnectMs`. */
  minReconnectMs?: number;
  maxReconnectMs?: number;
  connectTimeoutMs?: number;
  /** How long `publish` waits for the broker's acknowledgement. */
  publishTimeoutMs?: number;
  /** Defaults to `meshq-<random>`: unique per process, never `node-…` (those are agents). */
  clientId?: string;
}

export interface MqttLinkDeps {
  config: Pick<Config, 'mqtt'>;
  log: Logger;
  queues: JobQueues;
}

const DEFAULTS = {
  minReconnectMs: 1_000,
  maxReconnectMs: 30_000,
  connectTimeoutMs: 10_000,
  publishTimeoutMs: 10_000,
} as const;

/** At most this many drop warnings per window; the rest are counted and summarised. */
const DROP_WARNINGS_PER_WINDOW = 20;
const DROP_WINDOW_MS = 10_000;
const PAYLOAD_PREFIX_CHARS = 32;

export class MqttNotConnectedError extends Error {
  constructor() {
    super('the MQTT broker is not connected');
    this.name = 'MqttNotConnectedError';
  }
}

export class MqttLink implements MqttPublisher {
  readonly clientId: string;
  private readonly client: MqttClient;
  private readonly log: Logger;
  private readonly opts: Required<Omit<MqttLinkOptions, 'clientId'>>;
  private readonly jobIds = new PresenceJobIds();
  /**
   * Our own stores, handed to every reconnect: mqtt.js would otherwise start empty ones,
   * and QoS 1 messages sent but not yet acknowledged when the connection dropped would be
   * lost instead of re-sent.
   */
  private readonly stores = { incomingStore: new Store(), outgoingStore: new Store() };
  private reconnectTimer: NodeJS.Timeout | undefined;
  private failedAttempts = 0;
  private wasConnected = false;
  private closing = false;
  private dropWindowStart = 0;
  private dropsInWindow = 0;
  private readonly readyWaiters = new Set<() => void>();
  private subscribed = false;

  constructor(
    private readonly deps: MqttLinkDeps,
    options: MqttLinkOptions = {},
  ) {
    this.opts = { ...DEFAULTS, ...stripUndefined(options) };
    this.clientId = options.clientId ?? `meshq-${randomBytes(6).toString('hex')}`;
    this.log = deps.log.child({ component: 'mqtt', clientId: this.clientId });
    const { url, username, password } = deps.config.mqtt;
    const clientOptions: IClientOptions = {
      clientId: this.clientId,
      username,
      password,
      // A clean session: on every (re)connect the retained statuses arrive again, which is
      // exactly the catch-up needed after an outage. A persistent session would instead
      // replay every queued flap of every node.
      clean: true,
      connectTimeout: this.opts.connectTimeoutMs,
      keepalive: 30,
      // mqtt.js retries at a fixed interval; the backoff is ours (scheduleReconnect).
      reconnectPeriod: 0,
      // We subscribe on every `connect` ourselves.
      resubscribe: false,
      ...this.stores,
    };
    this.log.info({ url: redactUrl(url) }, 'connecting to the MQTT broker');
    this.client = connect(url, clientOptions);
    this.client.on('connect', () => this.onConnect());
    this.client.on('close', () => this.onClose());
    // Without a listener an 'error' event would throw and take the process down.
    this.client.on('error', (err) => this.log.warn({ err: err.message }, 'MQTT connection error'));
    this.client.on('message', (topic, payload) => this.onMessage(topic, payload));
  }

  get connected(): boolean {
    return this.client.connected && !this.closing;
  }

  /** Resolves once connected and subscribed (tests; start-up never waits for the broker). */
  ready(timeoutMs = 30_000): Promise<void> {
    if (this.subscribed && this.connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.readyWaiters.delete(done);
        reject(new Error(`MQTT link not ready after ${timeoutMs} ms`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.readyWaiters.add(done);
    });
  }

  publish(topic: string, payload: string | Buffer, opts: { qos?: 0 | 1; retain?: boolean } = {}): Promise<void> {
    // Refused rather than queued while down: callers (push-config) retry as a job, which
    // re-reads the desired state instead of delivering a stale copy much later.
    if (!this.connected) return Promise.reject(new MqttNotConnectedError());
    return new Promise((resolve, reject) => {
      // The message stays in the outgoing store after a timeout and is still delivered
      // on reconnect; only the caller stops waiting.
      const timer = setTimeout(() => reject(new Error(`no acknowledgement from the MQTT broker within ${this.opts.publishTimeoutMs} ms`)), this.opts.publishTimeoutMs);
      this.client.publish(topic, payload, { qos: opts.qos ?? 1, retain: opts.retain ?? false }, (err) => {
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      });
    });
  }

  /** Stops reconnecting and disconnects; bounded, so shutdown never hangs on the broker. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearTimeout(this.reconnectTimer);
    const client = this.client;
    if (client.connected) {
      // A polite DISCONNECT once in-flight acknowledgements arrived; a stalled broker gets 2 s.
      const ended = new Promise<void>((resolve) => client.end(false, {}, () => resolve()));
      const timedOut = await Promise.race([ended.then(() => false), sleep(2_000).then(() => true)]);
      if (timedOut) client.stream?.destroy();
    } else {
      await new Promise<void>((resolve) => client.end(true, {}, () => resolve()));
    }
    this.client.removeAllListeners('message');
    this.log.info('MQTT link closed');
  }

  private onConnect(): void {
    if (this.closing) return;
    this.failedAttempts = 0;
    this.wasConnected = true;
    this.log.info('MQTT connected');
    const subscriptions = { [STATUS_SUBSCRIPTION]: { qos: 1 as const }, [SYS_CONNECTED_SUBSCRIPTION]: { qos: 1 as const }, [SYS_DISCONNECTED_SUBSCRIPTION]: { qos: 1 as const } };
    this.client.subscribe(subscriptions, (err, granted) => {
      if (err) {
        // The connection dropped mid-subscribe: the next `connect` subscribes again.
        this.log.warn({ err: err.message }, 'MQTT subscribe failed');
        return;
      }
      // 128 = refused. Expected for $SYS on brokers that keep it to themselves (Mosquitto
      // has no per-client events; EMQX needs an ACL allowing $SYS/# to this user).
      const refused = (granted ?? []).filter((g) => g.qos === 128).map((g) => g.topic);
      if (refused.length > 0) this.log.warn({ topics: refused }, 'MQTT subscriptions refused by the broker');
      this.subscribed = true;
      for (const done of this.readyWaiters) done();
      this.readyWaiters.clear();
    });
    // Credentials changed while EMQX was unreachable are pending: push them now rather than
    // at the next scheduled reconcile. Coalesced, so N workers reconnecting ask for one sync.
    if (this.deps.config.mqtt.enabled) {
      requestBrokerSync(this.deps.queues, MQTT_CONNECTED_SYNC_REASON).catch((err: unknown) =>
        this.log.warn({ err }, 'requesting a broker sync after connecting failed'),
      );
    }
  }

  private onClose(): void {
    this.subscribed = false;
    if (this.closing) return;
    if (this.wasConnected) {
      this.wasConnected = false;
      this.log.warn('MQTT connection lost; reconnecting');
    }
    this.scheduleReconnect();
  }

  /**
   * Capped exponential backoff with up to 20% jitter, so that every worker that lost the
   * broker together does not hammer it together when it returns.
   */
  private scheduleReconnect(): void {
    if (this.reconnectTimer || this.closing) return;
    const full = Math.min(this.opts.maxReconnectMs, this.opts.minReconnectMs * 2 ** this.failedAttempts);
    const delay = Math.round(full * (1 - 0.2 * Math.random()));
    this.failedAttempts++;
    this.log.debug({ delayMs: delay, attempt: this.failedAttempts }, 'MQTT reconnect scheduled');
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (!this.closing) this.client.reconnect(this.stores);
    }, delay);
  }

  private onMessage(topic: string, payload: Buffer): void {
    let parsed: PresenceMessage;
    try {
      parsed = parsePresenceMessage(topic, payload);
    } catch (err) {
      parsed = { kind: 'rejected', reason: `unparseable (${err instanceof Error ? err.message : String(err)})` };
    }
    if (parsed.kind === 'ignored') {
      this.log.debug({ topic: clip(topic, 200), reason: parsed.reason }, 'MQTT message ignored');
      return;
    }
    if (parsed.kind === 'rejected') {
      this.warnDropped(topic, payload, parsed.reason);
      return;
    }
    // The time the message reached us: one clock for both sources. Retained statuses
    // delivered on (re)subscribe are the current state, so "now" is right for them too.
    const at = new Date();
    const jobId = this.jobIds.next(parsed.nodeId, parsed.online, at);
    const payloadData = { nodeId: parsed.nodeId, online: parsed.online, at: at.toISOString() };
    this.deps.queues
      .submit('node.presence', payloadData, { actor: 'mqtt', jobId })
      .catch((err: unknown) => this.log.warn({ err, nodeId: parsed.nodeId, jobId }, 'enqueueing a presence event failed'));
  }

  private warnDropped(topic: string, payload: Buffer, reason: string): void {
    const now = Date.now();
    if (now - this.dropWindowStart > DROP_WINDOW_MS) {
      if (this.dropsInWindow > DROP_WARNINGS_PER_WINDOW) {
        this.log.warn({ suppressed: this.dropsInWindow - DROP_WARNINGS_PER_WINDOW }, 'more MQTT messages dropped');
      }
      this.dropWindowStart = now;
      this.dropsInWindow = 0;
    }
    if (++this.dropsInWindow > DROP_WARNINGS_PER_WINDOW) return;
    this.log.warn(
      {
        topic: clip(topic, 200),
        bytes: payload.length,
        // Enough to recognise what a client sent, never the whole (possibly huge) body.
        prefix: clip(payload.subarray(0, PAYLOAD_PREFIX_CHARS * 4).toString('utf8'), PAYLOAD_PREFIX_CHARS),
        reason,
      },
      'MQTT message dropped',
    );
  }
}

/** Starts the link; it connects in the background (the worker never waits for the broker). */
export function startMqttLink(deps: MqttLinkDeps, options?: MqttLinkOptions): MqttLink {
  return new MqttLink(deps, options);
}

const clip = (s: string, n: number) => (s.length > n ? `${s.slice(0, n)}…` : s);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
