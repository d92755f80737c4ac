/**
 * The worker process's one MQTT connection: I/O only. What the topics mean lives in
 * topics.ts (pure), how presence is coalesced in presence.ts; what happens with presence
 * and with a (re)connection is the owner's business, handed in as callbacks (the worker
 * turns them into `node.presence` jobs and a broker sync request), so this module knows
 * nothing of queues or jobs.
 *
 * Inbound: agents publish a retained `online`/`offline` on `meshq/<configId>/<nodeId>/status`
 * with an `offline` last will, and EMQX announces
 * `$SYS/brokers/<node>/clients/<clientid>/connected|disconnected`; agents acknowledge the
 * config revisions they applied on `meshq/<configId>/<nodeId>/config/applied` (handed to
 * `onApplied`). Outbound: config pushes.
 *
 * Nothing a client sends can crash the process: every message is parsed defensively, and
 * what does not fit is logged (topic, size and a short prefix, never the whole payload)
 * and dropped.
 */
import { randomBytes } from 'node:crypto';
import { connect, Store, type IClientOptions, type MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { backoffDelay } from '../backoff.js';
import { redactUrl, type Config } from '../config.js';
import { DEFAULT_PRESENCE_WINDOW_MS, PresenceCoalescer, type PresenceEvent } from './presence.js';
import {
  APPLIED_SUBSCRIPTION,
  isAppliedTopic,
  parseAppliedMessage,
  parsePresenceMessage,
  STATUS_SUBSCRIPTION,
  SYS_CONNECTED_SUBSCRIPTION,
  SYS_DISCONNECTED_SUBSCRIPTION,
  type PresenceMessage,
} from './topics.js';

export type { PresenceEvent } from './presence.js';

/** Why a sync is requested when the connection comes (back) up. */
export const MQTT_CONNECTED_SYNC_REASON = 'MQTT connection (re)established';

/** What processors see of the link: enough to publish, nothing to subscribe with. */
export interface MqttPublisher {
  /** Whether the broker connection is up right now. */
  readonly connected: boolean;
  /** Resolves on the broker's acknowledgement (PUBACK at QoS 1); rejects when not connected. */
  publish(topic: string, payload: string | Buffer, opts?: { qos?: 0 | 1; retain?: boolean }): Promise<void>;
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
  /** Per node, at most one presence event per window (presence.ts). */
  presenceWindowMs?: number;
}

export interface MqttLinkCallbacks {
  /** A node's coalesced presence; must not throw (errors are the owner's to log). */
  onPresence(event: PresenceEvent): void;
  /** Every time the connection comes (back) up. */
  onConnected?(): void;
  /**
   * An agent's well-formed acknowledgement of a config revision (whether meshq issued that
   * revision is the owner's to check); must not throw.
   */
  onApplied?(ack: AppliedEvent): void;
}

/** `{"revision": n}` on `meshq/<configId>/<nodeId>/config/applied`, as it arrived. */
export interface AppliedEvent {
  configId: string;
  nodeId: string;
  revision: number;
  at: Date;
}

export interface MqttLinkDeps extends MqttLinkCallbacks {
  config: Pick<Config, 'mqtt'>;
  log: Logger;
}

const DEFAULTS = {
  minReconnectMs: 1_000,
  maxReconnectMs: 30_000,
  connectTimeoutMs: 10_000,
  publishTimeoutMs: 10_000,
  presenceWindowMs: DEFAULT_PRESENCE_WINDOW_MS,
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
  private readonly presence: PresenceCoalescer;
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
    this.presence = new PresenceCoalescer((event) => this.deliver(event), this.opts.presenceWindowMs);
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
    // The latest state of every node inside a window goes out before the link closes.
    this.presence.flush();
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
    const subscriptions = {
      [STATUS_SUBSCRIPTION]: { qos: 1 as const },
      [APPLIED_SUBSCRIPTION]: { qos: 1 as const },
      [SYS_CONNECTED_SUBSCRIPTION]: { qos: 1 as const },
      [SYS_DISCONNECTED_SUBSCRIPTION]: { qos: 1 as const },
    };
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
    try {
      this.deps.onConnected?.();
    } catch (err) {
      this.log.warn({ err }, 'the MQTT connected callback failed');
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
   * Capped exponential backoff with jitter, so that every worker that lost the broker
   * together does not hammer it together when it returns.
   */
  private scheduleReconnect(): void {
    if (this.reconnectTimer || this.closing) return;
    this.failedAttempts++;
    const delay = backoffDelay(this.failedAttempts, { baseMs: this.opts.minReconnectMs, capMs: this.opts.maxReconnectMs });
    this.log.debug({ delayMs: delay, attempt: this.failedAttempts }, 'MQTT reconnect scheduled');
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (!this.closing) this.client.reconnect(this.stores);
    }, delay);
  }

  private onMessage(topic: string, payload: Buffer): void {
    if (isAppliedTopic(topic)) {
      this.onAppliedMessage(topic, payload);
      return;
    }
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
    this.presence.push(parsed.nodeId, parsed.configId, parsed.online, new Date());
  }

  private onAppliedMessage(topic: string, payload: Buffer): void {
    const parsed = parseAppliedMessage(topic, payload);
    if (parsed.kind === 'rejected') {
      this.warnDropped(topic, payload, parsed.reason);
      return;
    }
    try {
      this.deps.onApplied?.({ configId: parsed.configId, nodeId: parsed.nodeId, revision: parsed.revision, at: new Date() });
    } catch (err) {
      this.log.warn({ err, nodeId: parsed.nodeId }, 'the MQTT acknowledgement callback failed');
    }
  }

  private deliver(event: PresenceEvent): void {
    try {
      this.deps.onPresence(event);
    } catch (err) {
      this.log.warn({ err, nodeId: event.nodeId }, 'the MQTT presence callback failed');
    }
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

/** Starts the link; it connects in the background (its owner never waits for the broker). */
export function startMqttLink(deps: MqttLinkDeps, options?: MqttLinkOptions): MqttLink {
  return new MqttLink(deps, options);
}

const clip = (s: string, n: number) => (s.length > n ? `${s.slice(0, n)}…` : s);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
