/**
 * The submitting side of the queues: validates a payload with its schema before it ever
 * reaches Redis, signs its envelope (envelope.ts), adds it with its row's retries and
 * deduplication, gives every job a UUIDv7 id (ids are also ledger keys, so they must be
 * unique forever, not per Redis instance), and maps BullMQ jobs to the API's job view.
 */
import { createHash, type KeyObject } from 'node:crypto';
import { Queue, QueueEvents, type Job, type JobsOptions, type Telemetry } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from '../config.js';
import { ConfigError, describeRedis, redactUrl } from '../config.js';
import { InvalidError } from '../domain/errors.js';
import { newId } from '../domain/ids.js';
import { parseFailedReason, type JobError } from './errors.js';
import { jobDefinition, jobOptions, isJobType, type JobInput, type JobPayload, type JobType } from './table.js';
import { compactIssues, describeZodError } from '../domain/zod-errors.js';
import { QUEUE_NAMES, type QueueName } from './names.js';
import { envelopeKey, signEnvelope, type JobEnvelope } from './envelope.js';
import { producerConnection, redisConnection, ReplicationUnconfirmedError, type RedisTarget } from './redis.js';

export type JobState = 'waiting' | 'delayed' | 'active' | 'completed' | 'failed';

export interface JobView {
  id: string;
  type: string;
  queue: string;
  state: JobState;
  progress: unknown;
  /** Runs started; null when answered from the ledger (Redis no longer has the job). */
  attempts: number | null;
  result: unknown;
  error: JobError | null;
  createdAt: string;
  finishedAt: string | null;
}

/**
 * Retention is bounded: BullMQ keeps finished jobs by age and count. Retries and
 * deduplication are per job type (table.ts jobOptions), set on every add.
 */
const RETENTION: JobsOptions = {
  removeOnComplete: { age: 24 * 3600, count: 10_000 },
  removeOnFail: { age: 7 * 24 * 3600, count: 10_000 },
};

/** Where a page of GET /api/v1/jobs ends: the last job's creation time and id. */
export interface JobCursor {
  at: number;
  id: string;
}

export interface JobListFilter {
  type?: JobType;
  state?: JobState;
  actor?: string;
  /** Created at or after. */
  since?: Date;
  /** Created before. */
  until?: Date;
  limit: number;
  cursor?: JobCursor;
}

const SCAN_BATCH = 200;
const SCAN_CAP = 20_000;

/** For states BullMQ keeps ordered by a time no earlier than the job's creation: that time. */
const ORDER_KEYS: Record<string, ((j: Job) => number) | undefined> = {
  completed: (j) => j.finishedOn ?? j.timestamp,
  failed: (j) => j.finishedOn ?? j.timestamp,
  delayed: (j) => j.timestamp + (j.opts.delay ?? 0),
};

const newestFirst = (a: Job, b: Job): number => b.timestamp - a.timestamp || (a.id! < b.id! ? 1 : a.id! > b.id! ? -1 : 0);

const toJobState = (raw: string): 'unknown' | JobState =>
  raw === 'unknown' ? 'unknown' : raw === 'completed' || raw === 'failed' || raw === 'active' || raw === 'delayed' ? raw : 'waiting';

/** Redis's append-only persistence as one process sees it: `unknown` when neither INFO nor CONFIG GET is allowed. */
export type RedisPersistence = { aof: true } | { aof: false; detail: string } | { aof: 'unknown'; detail: string };

export async function redisPersistence(connection: Redis): Promise<RedisPersistence> {
  const failures: string[] = [];
  try {
    const info = await connection.info('persistence');
    const m = /^aof_enabled:(\d)/m.exec(info);
    if (m) return m[1] === '1' ? { aof: true } : { aof: false, detail: 'aof_enabled:0 (appendonly no)' };
    failures.push('INFO persistence has no aof_enabled line');
  } catch (err) {
    failures.push(`INFO persistence: ${(err as Error).message}`);
  }
  try {
    const reply = (await connection.call('CONFIG', 'GET', 'appendonly')) as string[];
    if (reply[1] === 'yes') return { aof: true };
    if (reply[1] === 'no') return { aof: false, detail: 'appendonly no' };
    failures.push(`CONFIG GET appendonly answered ${JSON.stringify(reply)}`);
  } catch (err) {
    failures.push(`CONFIG GET appendonly: ${(err as Error).message}`);
  }
  return { aof: 'unknown', detail: failures.join('; ') };
}

/**
 * Start-up's durability rule: with REDIS_DURABILITY=aof a Redis that does not persist
 * (or whose persistence cannot be read) is refused, because an accepted job lives only
 * in Redis until a worker runs it.
 */
export async function requireRedisDurability(connection: Redis, config: RedisTarget & Pick<Config, 'redisDurability'>): Promise<RedisPersistence> {
  const persistence = await redisPersistence(connection);
  if (config.redisDurability === 'none' || persistence.aof === true) return persistence;
  const where = describeRedis(config);
  throw new ConfigError([
    persistence.aof === false
      ? `REDIS_DURABILITY: ${where} does not persist with AOF (${persistence.detail}): a Redis restart may lose accepted jobs. ` +
        'Turn AOF on (redis-server --appendonly yes), or set REDIS_DURABILITY=none to run without it'
      : `REDIS_DURABILITY: cannot tell whether ${where} persists with AOF, because this Redis user may run neither INFO nor CONFIG GET ` +
        `(${persistence.detail}). Allow one of them (ACL: +info or +config|get), or set REDIS_DURABILITY=none to run without the check`,
  ]);
}

/** The Redis key naming the database whose installation owns a queue prefix. */
export const ownerKey = (prefix: string) => `${prefix}:meshq:owner`;

/**
 * Claims the queue prefix for this installation (its database's id), or refuses: two
 * installations with one prefix on one Redis would run each other's jobs against the
 * wrong database. The first process of an installation claims; the others find their own
 * claim. The stored value names the database by its redacted URL (never a password).
 */
export async function claimQueuePrefix(
  connection: Redis,
  config: Pick<Config, 'queuePrefix' | 'databaseUrl'>,
  installationId: string,
): Promise<void> {
  const key = ownerKey(config.queuePrefix);
  const mine = { installation: installationId, database: redactUrl(config.databaseUrl) };
  await connection.set(key, JSON.stringify(mine), 'NX');
  const raw = await connection.get(key);
  let owner: { installation?: string; database?: string } = {};
  try {
    owner = JSON.parse(raw ?? '{}') as typeof owner;
  } catch {
    /* not ours: refused below */
  }
  if (owner.installation === installationId) return;
  throw new ConfigError([
    `QUEUE_PREFIX: the prefix "${config.queuePrefix}" on this Redis belongs to another installation, whose database is ${owner.database ?? String(raw)}; ` +
      `this one's database is ${mine.database}. Two installations on one Redis need different QUEUE_PREFIX values ` +
      `(if that installation is retired for good, delete the Redis key ${key})`,
  ]);
}

export interface SubmitOptions {
  actor: string;
  idempotencyKey?: string;
  jobId?: string;
  delayMs?: number;
  /** BullMQ priority: 1 runs first; absent, jobs run in submission order before any prioritized one. */
  priority?: number;
}

const WORKER_COUNT_TTL_MS = 5_000;

export class JobQueues {
  readonly connection: Redis;
  private readonly queues = new Map<QueueName, Queue>();
  private readonly events = new Map<QueueName, { events: QueueEvents; connection: Redis }>();
  readonly #eventsReady = new Map<QueueName, Promise<QueueEvents>>();
  /** Jobs returned by `add` in this process whose state is known without asking Redis (see view). */
  readonly #justAdded = new WeakSet<Job>();
  #workerCounts: { at: number; counts: Record<string, number | null> } | undefined;
  /** Signs every envelope this process adds (derived from the server key). */
  readonly #envelopeKey: KeyObject;
  /** Replicas that must confirm a submission before it is answered (the API's only; see #replicated). */
  readonly #waitReplicas: number;

  /**
   * `patient` (workers): commands wait for Redis to come back, so a follow-up job is not
   * lost to a blip. Otherwise (the API) every command fails fast: see producerConnection.
   */
  constructor(
    private readonly config: RedisTarget & Pick<Config, 'queuePrefix'> &
      Partial<Pick<Config, 'submitTimeoutMs' | 'jobRetryWindowMs' | 'jobRetryMaxDelayMs' | 'redisWaitReplicas'>>,
    serverKey: Buffer,
    connection?: Redis,
    opts: { patient?: boolean; telemetry?: Telemetry } = {},
  ) {
    this.#envelopeKey = envelopeKey(serverKey);
    this.#waitReplicas = opts.patient ? 0 : (config.redisWaitReplicas ?? 0);
    this.connection =
      connection ??
      (opts.patient ? redisConnection(config) : producerConnection(config, commandTimeoutOf(config.submitTimeoutMs)));
    this.connection.on('error', () => undefined); // surfaced by the calls that fail
    for (const name of QUEUE_NAMES) {
      // telemetry (src/bin/telemetry.ts): each add is a span whose context the job carries to its worker.
      const telemetry = opts.telemetry ? { telemetry: opts.telemetry } : {};
      const queue = new Queue(name, { connection: this.connection, prefix: config.queuePrefix, defaultJobOptions: RETENTION, ...telemetry });
      // The connection's errors, passed on: without a listener BullMQ prints each one (a
      // failover makes many while the connection finds the new primary).
      queue.on('error', () => undefined);
      this.queues.set(name, queue);
    }
  }

  /** The configured retry window and backoff cap (table.ts turns them into attempts). */
  private get retryLimits(): { windowMs?: number; capMs?: number } {
    return { windowMs: this.config.jobRetryWindowMs, capMs: this.config.jobRetryMaxDelayMs };
  }

  /** Resolves once the connection is ready (a fail-fast connection refuses commands before). */
  async ready(): Promise<void> {
    await this.queue(QUEUE_NAMES[0]!).waitUntilReady();
  }

  get prefix(): string {
    return this.config.queuePrefix;
  }

  queue(name: QueueName): Queue {
    return this.queues.get(name)!;
  }

  allQueues(): Queue[] {
    return [...this.queues.values()];
  }

  /**
   * Validates, then enqueues. An invalid payload throws InvalidError and nothing is
   * enqueued (the type says what a payload holds; the schema still checks its values).
   */
  async submit<T extends JobType>(type: T, payload: JobInput<T>, opts: SubmitOptions): Promise<Job> {
    if (!isJobType(type)) throw new InvalidError(`unknown job type "${String(type)}"`, { type });
    const parsed = jobDefinition(type).schema.safeParse(payload ?? {});
    if (!parsed.success) throw new InvalidError(describeZodError(parsed.error, type), compactIssues(parsed.error.issues));
    return this.enqueueValidated(type, parsed.data as JobPayload<T>, opts);
  }

  /**
   * Enqueues a payload the caller already parsed with its job schema (the API does, to
   * run its semantic checks on the parsed form): parsing it again here would double the
   * validation work on the submission hot path.
   */
  async enqueueValidated<T extends JobType>(type: T, payload: JobPayload<T>, opts: SubmitOptions): Promise<Job> {
    const def = jobDefinition(type);
    const envelope = signEnvelope(this.#envelopeKey, type, opts.actor, payload);
    const jobId = opts.jobId ?? (opts.idempotencyKey ? idempotentJobId(opts.actor, opts.idempotencyKey) : newId());
    const queue = this.queue(def.queue);
    const added = await queue.add(type, envelope, { ...jobOptions(type, payload, this.retryLimits), jobId, delay: opts.delayMs, ...(opts.priority ? { priority: opts.priority } : {}) });
    if (this.#waitReplicas > 0) await this.#replicated();
    // Deduplicated (the row's deduplication) or an existing id: BullMQ adds nothing and
    // hands back a local object carrying the existing job's id.
    if (!opts.idempotencyKey && !opts.jobId && !def.deduplication) {
      this.#justAdded.add(added);
      return added;
    }
    return (await queue.getJob(added.id!)) ?? added;
  }

  /**
   * Waits until REDIS_WAIT_REPLICAS replicas hold this connection's writes so far (WAIT),
   * within the submission's Redis bound. Without it, a job accepted just before its
   * primary died could live only on that primary, and the replica the sentinels promote
   * would never run it. Fewer confirmations: 503; the job may still be there, which an
   * Idempotency-Key retry finds.
   */
  async #replicated(): Promise<void> {
    const timeoutMs = Math.max(10, Math.floor(commandTimeoutOf(this.config.submitTimeoutMs) * 0.8));
    const acked = await this.connection.wait(this.#waitReplicas, timeoutMs);
    if (acked < this.#waitReplicas) throw new ReplicationUnconfirmedError(acked, this.#waitReplicas, timeoutMs);
  }

  /**
   * How many workers serve each queue (BullMQ lists them with CLIENT LIST), cached a few
   * seconds because that command walks every client of the Redis. `null`: Redis would
   * not say (CLIENT LIST not allowed for this user).
   */
  async workerCounts(): Promise<Record<string, number | null>> {
    if (this.#workerCounts && Date.now() - this.#workerCounts.at < WORKER_COUNT_TTL_MS) return this.#workerCounts.counts;
    const counts: Record<string, number | null> = {};
    await Promise.all(
      [...this.queues].map(async ([name, q]) => {
        counts[name] = await q.getWorkersCount().catch(() => null);
      }),
    );
    this.#workerCounts = { at: Date.now(), counts };
    return counts;
  }

  /** What a submission of `type` is told when no worker serves its queue (else undefined). */
  async unservedWarning(type: JobType): Promise<string | undefined> {
    const queue = jobDefinition(type).queue;
    const count = (await this.workerCounts().catch(() => ({}) as Record<string, number | null>))[queue];
    return count === 0 ? `no worker is serving the ${queue} queue: the job waits until a worker starts` : undefined;
  }

  /** A signed envelope for a job added other than by enqueue (a job scheduler's template). */
  signedEnvelope<T extends JobType>(type: T, actor: string, payload: JobPayload<T>): JobEnvelope {
    return signEnvelope(this.#envelopeKey, type, actor, payload);
  }

  async find(id: string): Promise<Job | undefined> {
    for (const queue of this.queues.values()) {
      const job = await queue.getJob(id);
      if (job) return job;
    }
    return undefined;
  }

  async view(job: Job): Promise<JobView> {
    // A job this process has just added is waiting (or delayed) as of its submission:
    // answering that spares the submission hot path a Redis round trip. Callers that
    // want a later state read the job again (waitFor, GET /jobs/:id).
    const raw = this.#justAdded.has(job) ? (job.opts.delay ? 'delayed' : 'waiting') : await job.getState();
    // `job` was read before its state: a job that finished in between would show as
    // completed with no result. Read it again so that state and result agree.
    if ((raw === 'completed' || raw === 'failed') && !job.finishedOn) {
      job = (await this.queue(job.queueName as QueueName).getJob(job.id!)) ?? job;
    }
    const state: JobState =
      raw === 'completed' || raw === 'failed' || raw === 'active' || raw === 'delayed' ? raw : 'waiting';
    return {
      id: job.id!,
      type: job.name,
      queue: job.queueName,
      state,
      // A completed job is done whatever its processor last reported.
      progress: state === 'completed' ? 100 : (job.progress ?? 0),
      attempts: job.attemptsMade,
      result: state === 'completed' ? (job.returnvalue ?? null) : null,
      error: state === 'failed' ? parseFailedReason(job.failedReason) : null,
      createdAt: new Date(job.timestamp).toISOString(),
      finishedAt: job.finishedOn ? new Date(job.finishedOn).toISOString() : null,
    };
  }

  /** A job of `type` by id, looked up in its own queue only. */
  async findOf(type: JobType, id: string): Promise<Job | undefined> {
    return (await this.queue(jobDefinition(type).queue).getJob(id)) ?? undefined;
  }

  /**
   * Cancels a job that has not started by removing it from Redis. Otherwise answers the
   * state that prevented it: active (BullMQ refuses to remove a job a worker holds),
   * completed or failed; `unknown` when Redis no longer has it.
   */
  async cancel(job: Job): Promise<'cancelled' | 'unknown' | JobState> {
    const raw = await job.getState();
    if (raw === 'unknown') return 'unknown';
    if (raw === 'active' || raw === 'completed' || raw === 'failed') return raw;
    try {
      await job.remove();
    } catch {
      return 'active';
    }
    return 'cancelled';
  }

  /**
   * Runs a failed job again, with its full retries. Whatever it did before, its ledger
   * row (src/db/closing-write.ts) keeps its effect to one. Otherwise answers the state
   * that prevented it.
   */
  async retry(job: Job): Promise<'retried' | 'unknown' | JobState> {
    const raw = await job.getState();
    if (raw !== 'failed') return toJobState(raw);
    try {
      await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
    } catch (err) {
      // Moved meanwhile (another retry got there first): say where it is now.
      const now = await job.getState();
      if (now === 'failed') throw err;
      return toJobState(now);
    }
    return 'retried';
  }

  /**
   * Jobs Redis holds, newest first by creation time (then id), a page at a time: the
   * cursor is the last job of the previous page. BullMQ keeps each state in its own order,
   * so every queue and state is read newest first in batches; completed, failed and
   * delayed jobs are ordered by a time no earlier than their creation, so their reading
   * stops once nothing further can reach the page. At most SCAN_CAP jobs are read per
   * queue and state.
   */
  async list(filter: JobListFilter): Promise<{ items: JobView[]; next: JobCursor | null }> {
    const states: string[] = filter.state
      ? filter.state === 'waiting'
        ? ['wait', 'prioritized']
        : [filter.state]
      : ['active', 'wait', 'prioritized', 'delayed', 'completed', 'failed'];
    const queues = filter.type ? [this.queue(jobDefinition(filter.type).queue)] : this.allQueues();
    const { cursor, since, until, limit } = filter;
    const matches = (j: Job): boolean =>
      (!filter.type || j.name === filter.type) &&
      (!filter.actor || (j.data as { actor?: unknown } | undefined)?.actor === filter.actor) &&
      (!since || j.timestamp >= since.getTime()) &&
      (!until || j.timestamp < until.getTime()) &&
      (!cursor || j.timestamp < cursor.at || (j.timestamp === cursor.at && j.id! < cursor.id));
    const candidates: Job[] = [];
    for (const q of queues) {
      for (const state of states) {
        const orderKey = ORDER_KEYS[state];
        const found: Job[] = [];
        for (let start = 0; start < SCAN_CAP; start += SCAN_BATCH) {
          const read = (await q.getJobs([state as never], start, start + SCAN_BATCH - 1, false)) as (Job | undefined)[];
          const batch = read.filter((j): j is Job => !!j);
          found.push(...batch.filter(matches));
          if (read.length < SCAN_BATCH) break;
          if (!orderKey || batch.length === 0) continue;
          // Every job further on was created no later than `bound`.
          const bound = orderKey(batch[batch.length - 1]!);
          if (since && bound < since.getTime()) break;
          if (found.length > limit) {
            found.sort(newestFirst);
            if (bound < found[limit]!.timestamp) break;
          }
        }
        candidates.push(...found);
      }
    }
    candidates.sort(newestFirst);
    const page = candidates.slice(0, limit);
    const last = page[page.length - 1];
    const next = candidates.length > limit && last ? { at: last.timestamp, id: last.id! } : null;
    return { items: await Promise.all(page.map((j) => this.view(j))), next };
  }

  /** Waits up to `ms` for the job to finish; returns its fresh view either way. */
  async waitFor(job: Job, ms: number): Promise<JobView> {
    const events = await this.queueEvents(job.queueName as QueueName);
    await job.waitUntilFinished(events, ms).catch(() => undefined);
    const fresh = await this.queue(job.queueName as QueueName).getJob(job.id!);
    return this.view(fresh ?? job);
  }

  async counts(): Promise<Record<string, Record<string, number>>> {
    const out: Record<string, Record<string, number>> = {};
    for (const [name, q] of this.queues) {
      out[name] = await q.getJobCounts('waiting', 'active', 'delayed', 'completed', 'failed', 'prioritized');
    }
    return out;
  }

  private async queueEvents(name: QueueName): Promise<QueueEvents> {
    // One reader per queue however many requests wait at once: the first makes it, the
    // others wait for the same one (each making its own would leave connections behind).
    let pending = this.#eventsReady.get(name);
    if (!pending) {
      pending = (async () => {
        const ev = await this.eventsFromTail(name);
        this.events.set(name, ev);
        await ev.events.waitUntilReady();
        return ev.events;
      })();
      this.#eventsReady.set(name, pending);
      pending.catch(() => this.#eventsReady.delete(name));
    }
    return pending;
  }

  /**
   * A QueueEvents reader starting at the stream's current tail. BullMQ's default '$'
   * means "newest when the first blocking read runs", so an event added between
   * creation and that read (a job finishing quickly) would be missed.
   */
  async eventsFromTail(name: QueueName): Promise<{ events: QueueEvents; connection: Redis }> {
    const tail = await this.connection.xrevrange(this.queue(name).toKey('events'), '+', '-', 'COUNT', 1);
    // Its own connection (QueueEvents blocks on XREAD); BullMQ does not close a
    // connection it was given, so the caller quits it after closing the events.
    const connection = redisConnection(this.config);
    connection.on('error', () => undefined);
    const events = new QueueEvents(name, { connection, prefix: this.config.queuePrefix, lastEventId: tail[0]?.[0] ?? '0-0' });
    events.on('error', () => undefined); // a wait that hears nothing ends by its own deadline
    return { events, connection };
  }

  async close(): Promise<void> {
    await Promise.all(
      [...this.events.values()].map(async ({ events, connection }) => {
        await events.close();
        await connection.quit().catch(() => connection.disconnect());
      }),
    );
    await Promise.all([...this.queues.values()].map((q) => q.close()));
    await this.connection.quit().catch(() => this.connection.disconnect());
  }
}

/**
 * A submission's Redis share of SUBMIT_TIMEOUT_MS: half of it (the other half bounds its
 * database checks), so the whole answers within the bound.
 */
export const commandTimeoutOf = (submitTimeoutMs = 5_000) => Math.max(50, Math.ceil(submitTimeoutMs / 2));

/** Same key from the same caller -> same job id -> one job, one effect. */
export function idempotentJobId(actor: string, key: string): string {
  return 'idem-' + createHash('sha256').update(`${actor}\n${key}`).digest('hex').slice(0, 40);
}

export type { JobType };
