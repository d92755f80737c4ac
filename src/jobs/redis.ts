/**
 * The one place meshq opens a Redis connection. Queues, workers, job schedulers, queue
 * events, the event stream's readers and writers, Bull Board, readiness probes and the
 * start-up check all get theirs here (BullMQ duplicates a connection it is given, options
 * included), so a deployment setting (TLS, an ACL user, Sentinel) reaches every one.
 *
 * With Sentinel (config.redisSentinel) a connection asks the sentinels for the primary,
 * checks with INFO that the server it reached is a primary (ioredis's ready check; a
 * demoted one sends it back to the sentinels), and follows a failover by itself:
 * - a primary that is killed or demoted closes its connections (the sentinels end the
 *   clients of a primary they turn into a replica): each one reconnects through the
 *   sentinels to the new primary;
 * - a command answered READONLY (it reached a primary that became a replica) reconnects
 *   the same way. A patient connection sends the command again after reconnecting (a
 *   replica applied nothing); otherwise the command fails and the API answers 503.
 *   NOREPLICAS (a primary with `min-replicas-to-write` cut off from its replicas) does
 *   not reconnect: with a replica down and no failover it would only make every
 *   connection ask the sentinels again, over and over; it fails the command (503, or a
 *   worker's retry) until a replica is back or the sentinels end the demoted primary's
 *   clients.
 * ioredis's `failoverDetector` (subscribing to the sentinels' `+switch-master`) is left
 * off: a switch announced while a connection is reconnecting ends that connection for
 * good ("Connection is closed." on every later command), which the failover test hit.
 */
import { Redis, type RedisOptions } from 'ioredis';
import { describeRedis, type Config } from '../config.js';

/** What a connection needs to know of the configuration; a bare URL is a plain Redis. */
export type RedisTarget = Pick<Config, 'redisUrl'> & Partial<Pick<Config, 'redisSentinel'>>;

const targetOf = (target: RedisTarget | string): RedisTarget => (typeof target === 'string' ? { redisUrl: target } : target);

export class RedisUnavailableError extends Error {
  constructor(target: RedisTarget | string, cause: unknown) {
    super(`${describeRedis(targetOf(target))} is not reachable: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = 'RedisUnavailableError';
  }
}

/** Fewer replicas than REDIS_WAIT_REPLICAS confirmed a write in time: the API answers 503 (src/api/errors.ts). */
export class ReplicationUnconfirmedError extends Error {
  constructor(acked: number, wanted: number, timeoutMs: number) {
    super(`Redis: ${acked} of ${wanted} replicas confirmed the write within ${timeoutMs} ms (REDIS_WAIT_REPLICAS)`);
    this.name = 'ReplicationUnconfirmedError';
  }
}

const isReadOnly = (err: Error) => err.message.startsWith('READONLY');

/**
 * The options every connection shares. REDIS_URL always goes to ioredis as the URL (user,
 * password, database number, TLS for rediss:); with Sentinel its host and port are not
 * used, and TLS to the data nodes must be asked for separately (ioredis otherwise
 * connects in clear to the primary the sentinels name, whatever the URL's scheme).
 */
function sharedOptions(target: RedisTarget, resend: boolean): RedisOptions {
  const s = target.redisSentinel;
  if (!s) return {};
  return {
    sentinels: s.sentinels.map((a) => ({ host: a.host, port: a.port })),
    name: s.name,
    ...(s.username !== undefined ? { sentinelUsername: s.username } : {}),
    ...(s.password !== undefined ? { sentinelPassword: s.password } : {}),
    ...(s.tls ? { sentinelTLS: {} } : {}),
    enableTLSForSentinelMode: new URL(target.redisUrl).protocol === 'rediss:',
    reconnectOnError: (err) => (isReadOnly(err) ? (resend ? 2 : 1) : false),
  };
}

function open(target: RedisTarget | string, options: RedisOptions, resend: boolean): Redis {
  const t = targetOf(target);
  return new Redis(t.redisUrl, { ...sharedOptions(t, resend), ...options });
}

/**
 * A connection that waits for Redis rather than fail: workers, job schedulers, queue
 * events and the event stream's readers (BullMQ wants `maxRetriesPerRequest: null` on
 * connections that block).
 */
export function redisConnection(target: RedisTarget | string): Redis {
  return open(target, { maxRetriesPerRequest: null, enableReadyCheck: true }, true);
}

/**
 * The connection a process that answers clients adds jobs with: it never buffers. With
 * Redis down a command fails at once (no offline queue, no retry after a lost
 * connection), and a command Redis does not answer fails after `commandTimeoutMs`, so a
 * submission can answer 503 instead of hanging and having its job added later, after the
 * client gave up. (A Redis that is frozen, not down, may still apply a command that timed
 * out here once it resumes: the command had reached it.)
 */
export function producerConnection(target: RedisTarget | string, commandTimeoutMs: number): Redis {
  return open(
    target,
    {
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      commandTimeout: commandTimeoutMs,
      connectTimeout: Math.max(commandTimeoutMs, 1_000),
      enableReadyCheck: true,
    },
    false,
  );
}

/** Fails fast with a clear message instead of hanging when Redis (or every sentinel) is down. */
export async function checkRedis(target: RedisTarget | string, timeoutMs = 5_000): Promise<void> {
  const probe = open(
    target,
    {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      connectTimeout: timeoutMs,
      retryStrategy: () => null,
      sentinelRetryStrategy: () => null,
    },
    false,
  );
  probe.on('error', () => undefined);
  try {
    await probe.connect();
    await probe.ping();
  } catch (err) {
    throw new RedisUnavailableError(target, err);
  } finally {
    probe.disconnect();
  }
}
