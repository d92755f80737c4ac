/**
 * The event stream behind GET /api/v1/events, read from Redis streams so that any API
 * process serves every event and a client resumes where it stopped:
 * - job lifecycle: BullMQ's own per-queue event streams (queued, active, progress,
 *   completed, failed), written by BullMQ as the job moves;
 * - domain changes: one entry per committed job in `<prefix>:events`, added by the
 *   worker after commit (the event's type is the job's type: `node.update` means a node
 *   update committed; see CommittedEvents). A job that was already applied and is re-run
 *   publishes nothing.
 *
 * An event's id is the position in every stream after it (one stream id per source),
 * so `Last-Event-ID` resumes all of them at once. Each stream is trimmed to about
 * EVENTS_MAXLEN entries (BullMQ trims its own): a client away for longer than that many
 * events misses the oldest ones.
 *
 * Payloads never carry secrets: a domain event names ids only, a job event the job's
 * result (results hold no secret) or its error.
 */
import type { Redis } from 'ioredis';
import { parseFailedReason } from './errors.js';
import { QUEUE_NAMES, type QueueName } from './names.js';
import type { JobType } from './payloads.js';

export const EVENTS_MAXLEN = 10_000;

/**
 * How long a committed event may wait for others to share its write: short beside what
 * an SSE client notices, long beside the time between jobs of a busy worker.
 */
export const EVENTS_WINDOW_MS = 10;

export const eventsStreamKey = (prefix: string): string => `${prefix}:events`;

export interface StreamEvent {
  /** Cursor after this event (the SSE id). */
  id: string;
  /** `job.queued`, `job.active`, `job.progress`, `job.completed`, `job.failed`, or a job type (domain change). */
  type: string;
  data: Record<string, unknown>;
}

export interface CommittedJob {
  jobId: string;
  type: JobType;
  actor: string;
  payload: unknown;
  result: unknown;
}

/** Ids only: names of fields that identify what a job changed. */
const REF = /^(id|[a-z]+Id)$/;

function refs(...sources: unknown[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const source of sources) {
    if (!source || typeof source !== 'object' || Array.isArray(source)) continue;
    for (const [k, v] of Object.entries(source)) {
      if (REF.test(k) && typeof v === 'string' && v.length <= 200 && !(k in out)) out[k] = v;
    }
  }
  return out;
}

const committedFields = (job: CommittedJob): string =>
  JSON.stringify({ jobId: job.jobId, actor: job.actor, at: new Date().toISOString(), ...refs(job.result, job.payload) });

/**
 * Several stream entries in one command: an ioredis pipeline copies every script BullMQ
 * defined on the connection each time one is made, and separate commands are separate
 * socket writes. ARGV: the stream's approximate length cap, then type and data per entry.
 */
const ADD_EVENTS = `
for i = 2, #ARGV, 2 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'type', ARGV[i], 'data', ARGV[i + 1])
end`;

/**
 * Adds committed jobs' domain events (the runner hands each over after commit). The job
 * does not wait for its event: a Redis round trip per job in every worker slot halved
 * the throughput of a worker whose transactions are short (SQLite). Events go out in
 * commit order, together in one command: the first event handed over while none is on
 * its way waits EVENTS_WINDOW_MS for the ones that follow (each command is a socket
 * write, and a write per job showed in the worker's profile as much as the XADD work
 * itself), and those handed over while a batch is being written go in the next one. As
 * before, an event is added only after its job committed, and one that cannot be
 * written is logged, never undoes or fails its job. `flush()` writes what is waiting at
 * once and waits for every event handed over (a worker closing).
 */
export class CommittedEvents {
  private queued: { type: string; data: string }[] = [];
  private sending: Promise<void> | undefined;
  private window: NodeJS.Timeout | undefined;

  constructor(
    private readonly connection: Redis,
    private readonly prefix: string,
    private readonly onError: (err: unknown, events: number) => void,
  ) {}

  publish(job: CommittedJob): void {
    this.queued.push({ type: job.type, data: committedFields(job) });
    if (!this.sending && !this.window) this.window = setTimeout(() => this.sendNow(), EVENTS_WINDOW_MS);
  }

  async flush(): Promise<void> {
    this.sendNow();
    while (this.sending) await this.sending;
  }

  private sendNow(): void {
    clearTimeout(this.window);
    this.window = undefined;
    if (this.queued.length > 0) this.sending ??= this.send();
  }

  private async send(): Promise<void> {
    const key = eventsStreamKey(this.prefix);
    while (this.queued.length > 0) {
      const batch = this.queued;
      this.queued = [];
      try {
        if (batch.length === 1) {
          await this.connection.xadd(key, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', batch[0]!.type, 'data', batch[0]!.data);
          continue;
        }
        await this.connection.eval(ADD_EVENTS, 1, key, EVENTS_MAXLEN, ...batch.flatMap((e) => [e.type, e.data]));
      } catch (err) {
        this.onError(err, batch.length);
      }
    }
    this.sending = undefined;
  }
}

/** `node.applied`: an agent acknowledged a revision, and it was recorded (src/jobs/acks.ts). */
export async function publishApplied(connection: Redis, prefix: string, acks: readonly { nodeId: string; revision: number }[], at: Date): Promise<void> {
  if (acks.length === 0) return;
  const pipeline = connection.pipeline();
  for (const ack of acks) {
    const data = JSON.stringify({ nodeId: ack.nodeId, revision: ack.revision, at: at.toISOString() });
    pipeline.xadd(eventsStreamKey(prefix), 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'node.applied', 'data', data);
  }
  await pipeline.exec();
}

interface Source {
  key: string;
  queue?: QueueName;
}

const STREAM_ID = /^\d{1,20}-\d{1,20}$/;

/** A type filter as given in `?types=`: exact names, or `prefix.*`. */
export function typeFilter(spec: string | undefined): ((type: string) => boolean) | null {
  if (!spec) return () => true;
  const patterns = spec.split(',').map((s) => s.trim()).filter(Boolean);
  if (patterns.some((p) => !/^[a-z][a-z0-9-]*(\.([a-z][a-z0-9-]*|\*))*$|^\*$/.test(p))) return null;
  return (type) => patterns.some((p) => p === '*' || p === type || (p.endsWith('.*') && type.startsWith(p.slice(0, -1))));
}

const JOB_EVENTS: Record<string, string> = {
  added: 'job.queued',
  active: 'job.active',
  progress: 'job.progress',
  completed: 'job.completed',
  failed: 'job.failed',
};

function fieldsOf(raw: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < raw.length; i += 2) out[raw[i]!] = raw[i + 1]!;
  return out;
}

function parseJson(text: string | undefined): unknown {
  if (text === undefined) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

const compareIds = (a: string, b: string): number => {
  const [am, as] = a.split('-').map(BigInt) as [bigint, bigint];
  const [bm, bs] = b.split('-').map(BigInt) as [bigint, bigint];
  return am === bm ? (as < bs ? -1 : as > bs ? 1 : 0) : am < bm ? -1 : 1;
};

/**
 * Reads the streams for one client, on a connection of its own (XREAD blocks). `read()`
 * waits up to `blockMs` and returns the events that arrived (possibly none: the caller
 * sends a keep-alive then).
 */
export class EventReader {
  private readonly sources: Source[];
  private positions: string[] = [];
  /** Job id -> type, learnt from `added` events or looked up once. */
  private readonly types = new Map<string, string>();

  constructor(
    private readonly connection: Redis,
    private readonly prefix: string,
  ) {
    this.sources = [{ key: eventsStreamKey(prefix) }, ...QUEUE_NAMES.map((queue) => ({ key: `${prefix}:${queue}:events`, queue }))];
  }

  /** Checks a Last-Event-ID: null when it is not one of ours. */
  static parseCursor(cursor: string, sources = 1 + QUEUE_NAMES.length): string[] | null {
    const ids = cursor.split(',');
    return ids.length === sources && ids.every((id) => STREAM_ID.test(id)) ? ids : null;
  }

  /** Starts after `cursor` (a Last-Event-ID), or at every stream's current tail. */
  async start(cursor?: string[]): Promise<void> {
    if (cursor) {
      this.positions = [...cursor];
      return;
    }
    const pipeline = this.connection.pipeline();
    for (const s of this.sources) pipeline.xrevrange(s.key, '+', '-', 'COUNT', 1);
    const tails = (await pipeline.exec()) ?? [];
    this.positions = tails.map(([err, entries]) => {
      if (err) throw err;
      return (entries as [string, string[]][])[0]?.[0] ?? '0-0';
    });
  }

  get cursor(): string {
    return this.positions.join(',');
  }

  async read(blockMs: number, count = 200): Promise<StreamEvent[]> {
    const reply = (await this.connection.xread('COUNT', count, 'BLOCK', blockMs, 'STREAMS', ...this.sources.map((s) => s.key), ...this.positions)) as
      | [string, [string, string[]][]][]
      | null;
    if (!reply) return [];
    const entries: { source: number; id: string; fields: Record<string, string> }[] = [];
    for (const [key, list] of reply) {
      const source = this.sources.findIndex((s) => s.key === key);
      for (const [id, raw] of list) entries.push({ source, id, fields: fieldsOf(raw) });
    }
    // Streams are read together; their ids are times, so merging by id keeps time order.
    entries.sort((a, b) => compareIds(a.id, b.id));
    await this.learnTypes(entries.filter((e) => this.sources[e.source]!.queue).map((e) => ({ queue: this.sources[e.source]!.queue!, fields: e.fields })));

    const out: StreamEvent[] = [];
    for (const e of entries) {
      this.positions[e.source] = e.id;
      const event = this.decode(this.sources[e.source]!, e.fields);
      if (event) out.push({ id: this.cursor, ...event });
    }
    return out;
  }

  private decode(source: Source, f: Record<string, string>): Omit<StreamEvent, 'id'> | null {
    if (!source.queue) {
      if (!f.type) return null;
      return { type: f.type, data: (parseJson(f.data) as Record<string, unknown>) ?? {} };
    }
    const type = f.event ? JOB_EVENTS[f.event] : undefined;
    if (!type || !f.jobId) return null;
    const data: Record<string, unknown> = { jobId: f.jobId, jobType: this.types.get(f.jobId) ?? null, queue: source.queue };
    if (f.event === 'progress') data.progress = parseJson(f.data);
    if (f.event === 'completed') data.result = parseJson(f.returnvalue);
    if (f.event === 'failed') data.error = parseFailedReason(f.failedReason);
    return { type, data };
  }

  /** The job's type for every job event: from its `added` event, else one pipelined lookup per batch. */
  private async learnTypes(entries: { queue: QueueName; fields: Record<string, string> }[]): Promise<void> {
    const missing = new Map<string, QueueName>();
    for (const { queue, fields } of entries) {
      if (!fields.jobId || !fields.event || !(fields.event in JOB_EVENTS)) continue;
      if (fields.event === 'added' && fields.name) this.types.set(fields.jobId, fields.name);
      else if (!this.types.has(fields.jobId)) missing.set(fields.jobId, queue);
    }
    if (missing.size > 0) {
      const pipeline = this.connection.pipeline();
      for (const [jobId, queue] of missing) pipeline.hget(`${this.prefix}:${queue}:${jobId}`, 'name');
      const names = (await pipeline.exec()) ?? [];
      [...missing.keys()].forEach((jobId, i) => {
        const name = names[i]?.[1];
        if (typeof name === 'string') this.types.set(jobId, name);
      });
    }
    // Bounded: the oldest entries go first (a Map iterates in insertion order).
    while (this.types.size > 10_000) this.types.delete(this.types.keys().next().value!);
  }
}
