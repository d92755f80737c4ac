/**
 * The submitting side of the queues: validates a payload with its schema before it ever
 * reaches Redis, signs its envelope (envelope.ts), adds it with its row's retries and
 * deduplication, gives every job a UUIDv7 id (ids are also ledger keys, so they must be
 * unique forever, not per Redis instance), and maps BullMQ jobs to the API's job view.
 */
import { createHash } from 'node:crypto';
import { Queue, QueueEvents, type Job, type JobsOptions } from 'bullmq';
import { Redis } from 'ioredis';
import { v7 as uuidv7 } from 'uuid';
import type { Config } from '../config.js';
import { redactUrl } from '../config.js';
import { InvalidError } from '../domain/errors.js';
import { parseFailedReason, type JobError } from './errors.js';
import { jobDefinition, jobOptions, isJobType, type JobInput, type JobPayload, type JobType } from './table.js';
import { compactIssues, describeZodError } from '../domain/zod-errors.js';
import { QUEUE_NAMES, type QueueName } from './names.js';
import { envelopeKey, signEnvelope, type JobEnvelope } from './envelope.js';

export type JobState = 'waiting' | 'delayed' | 'active' | 'completed' | 'failed';

export interface JobView {
  id: string;
  type: string;
  queue: string;
  state: JobState;
  progress: unknown;
  attempts: number;
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

export class RedisUnavailableError extends Error {
  constructor(url: string, cause: unknown) {
    super(`Redis at ${redactUrl(url)} is not reachable: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = 'RedisUnavailableError';
  }
}

/** BullMQ wants `maxRetriesPerRequest: null` on connections that block (workers, events). */
export function redisConnection(url: string): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true });
}

/** Fails fast with a clear message instead of hanging when Redis is down. */
export async function checkRedis(url: string, timeoutMs = 5_000): Promise<void> {
  const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: timeoutMs, retryStrategy: () => null });
  probe.on('error', () => undefined);
  try {
    await probe.connect();
    await probe.ping();
  } catch (err) {
    throw new RedisUnavailableError(url, err);
  } finally {
    probe.disconnect();
  }
}

export interface SubmitOptions {
  actor: string;
  idempotencyKey?: string;
  jobId?: string;
  delayMs?: number;
}

export class JobQueues {
  readonly connection: Redis;
  private readonly queues = new Map<QueueName, Queue>();
  private readonly events = new Map<QueueName, { events: QueueEvents; connection: Redis }>();
  /** Jobs returned by `add` in this process whose state is known without asking Redis (see view). */
  readonly #justAdded = new WeakSet<Job>();
  /** Signs every envelope this process adds (derived from the server key). */
  readonly #envelopeKey: Buffer;

  constructor(
    private readonly config: Pick<Config, 'redisUrl' | 'queuePrefix'>,
    serverKey: Buffer,
    connection?: Redis,
  ) {
    this.#envelopeKey = envelopeKey(serverKey);
    this.connection = connection ?? redisConnection(config.redisUrl);
    this.connection.on('error', () => undefined); // surfaced by the calls that fail
    for (const name of QUEUE_NAMES) {
      this.queues.set(name, new Queue(name, { connection: this.connection, prefix: config.queuePrefix, defaultJobOptions: RETENTION }));
    }
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
    const jobId = opts.jobId ?? (opts.idempotencyKey ? idempotentJobId(opts.actor, opts.idempotencyKey) : uuidv7());
    const queue = this.queue(def.queue);
    const added = await queue.add(type, envelope, { ...jobOptions(type, payload), jobId, delay: opts.delayMs });
    // Deduplicated (the row's deduplication) or an existing id: BullMQ adds nothing and
    // hands back a local object carrying the existing job's id.
    if (!opts.idempotencyKey && !opts.jobId && !def.deduplication) {
      this.#justAdded.add(added);
      return added;
    }
    return (await queue.getJob(added.id!)) ?? added;
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
      progress: job.progress ?? 0,
      attempts: job.attemptsMade,
      result: state === 'completed' ? (job.returnvalue ?? null) : null,
      error: state === 'failed' ? parseFailedReason(job.failedReason) : null,
      createdAt: new Date(job.timestamp).toISOString(),
      finishedAt: job.finishedOn ? new Date(job.finishedOn).toISOString() : null,
    };
  }

  async list(filter: { type?: string; state?: JobState; limit: number }): Promise<JobView[]> {
    const states = filter.state ? [filter.state === 'waiting' ? 'wait' : filter.state] : ['active', 'wait', 'delayed', 'completed', 'failed'];
    const queues = filter.type && isJobType(filter.type) ? [this.queue(jobDefinition(filter.type).queue)] : this.allQueues();
    const jobs: Job[] = [];
    for (const q of queues) {
      // Over-fetch when filtering by type: several types share the operations queue.
      const batch = (await q.getJobs(states as never, 0, filter.type ? filter.limit * 5 : filter.limit - 1, false)) as Job[];
      jobs.push(...batch.filter((j) => j && (!filter.type || j.name === filter.type)));
    }
    jobs.sort((a, b) => b.timestamp - a.timestamp);
    return Promise.all(jobs.slice(0, filter.limit).map((j) => this.view(j)));
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
    let ev = this.events.get(name);
    if (!ev) {
      ev = await this.eventsFromTail(name);
      this.events.set(name, ev);
      await ev.events.waitUntilReady();
    }
    return ev.events;
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
    const connection = redisConnection(this.config.redisUrl);
    connection.on('error', () => undefined);
    const events = new QueueEvents(name, { connection, prefix: this.config.queuePrefix, lastEventId: tail[0]?.[0] ?? '0-0' });
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

/** Same key from the same caller -> same job id -> one job, one effect. */
export function idempotentJobId(actor: string, key: string): string {
  return 'idem-' + createHash('sha256').update(`${actor}\n${key}`).digest('hex').slice(0, 40);
}

export type { JobType };
