/**
 * Writes: POST /jobs validates a payload with its job type's schema, runs the cheap
 * semantic check of its job table row (precheck; see src/jobs/prechecks.ts) and enqueues;
 * nothing is enqueued for a rejected request. Plus job status, job listing and the
 * job-type catalogue (each type's queue, scope and payload JSON Schema).
 */
import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Job } from 'bullmq';
import { z } from 'zod';
import type { AppContext } from '../context.js';
import { ApiError, isUnavailable, withDeadline } from '../errors.js';
import { forbidden } from '../auth.js';
import { ConflictError, InvalidError } from '../../domain/errors.js';
import { hasScope, type Scope } from '../../domain/scopes.js';
import { JOB_TYPES, PUBLIC_JOB_TYPES, isJobType, jobDefinition, type JobPayload, type JobType } from '../../jobs/table.js';
import { compactIssues, describeZodError } from '../../domain/zod-errors.js';
import { commandTimeoutOf, idempotentJobId, type JobCursor, type JobQueues, type JobView } from '../../jobs/queue-client.js';
import { canonicalJson } from '../../jobs/envelope.js';
import { Prechecks } from '../../jobs/prechecks.js';
import { createRepositories, type Repositories } from '../../repositories/index.js';
import type { IdempotencyRecord } from '../../repositories/idempotency.js';
import type { LedgerEntry } from '../../repositories/ledger.js';
import { toJsonSchema } from '../validation.js';
import { cancelledSchema, documentedAs, errorResponses, jobAnswers, jobSchema, jobSubmissionDocument, jobTypeSchema, json, pageOf } from '../schemas.js';

/** Ten minutes: a restore or an export of a large database fits; a proxy in front must allow as long. */
export const MAX_WAIT_MS = 600_000;
/** Longest `delay` of a submission. */
export const MAX_DELAY_MS = 24 * 3600 * 1000;
/** BullMQ's highest priority number (lowest priority). */
const MAX_PRIORITY = 2_097_152;

export const waitQuery = z.strictObject({
  wait: z.coerce.number().int().min(0).max(MAX_WAIT_MS).default(0).describe('Milliseconds to wait for the job to finish (at most 600000)'),
});

const delay = z.number().int().min(0).max(MAX_DELAY_MS).describe('Milliseconds before the job may run (at most a day); until then it can be cancelled');
const priority = z.number().int().min(1).max(MAX_PRIORITY).describe('BullMQ priority: 1 runs first; jobs without one run before prioritized ones');
// Validated in two steps (this envelope, then `data` with the type's own schema, so that a
// message names the type); documented as one `oneOf` of every public type.
const submitBody = documentedAs(
  z.strictObject({
    type: z.string().min(1).describe('A job type from GET /api/v1/job-types'),
    data: z.unknown().optional().describe("The job's payload: see its JSON Schema in GET /api/v1/job-types"),
    delay: delay.optional(),
    priority: priority.optional(),
  }),
  jobSubmissionDocument({ delay, priority }),
);

// Loose: Fastify replaces request.headers with the validated value, which must keep the rest.
const submitHeaders = z.looseObject({
  'idempotency-key': z
    .string()
    .min(1)
    .max(200)
    .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces')
    .optional()
    .describe('The same key from the same caller submits one job, once; a retry gets that job or its recorded outcome'),
});

const jobParams = z.strictObject({ id: z.string().min(1).max(200) });

const JOB_STATES = ['waiting', 'delayed', 'active', 'completed', 'failed'] as const;

/**
 * 202 while the job is pending; 200 once it completed within `wait`; 422 with the job
 * (its `error`) once it failed: a failed job is never answered as a success.
 */
export async function replyWithJob(reply: FastifyReply, queues: JobQueues, job: Job, waitMs: number, extra?: (view: JobView) => object) {
  const view = waitMs > 0 ? await queues.waitFor(job, waitMs) : await queues.view(job);
  return sendView(reply, view, extra);
}

function sendView(reply: FastifyReply, view: JobView, extra?: (view: JobView) => object) {
  void reply.status(statusOf(view)).header('location', `/api/v1/jobs/${encodeURIComponent(view.id)}`);
  return extra ? extra(view) : view;
}

const statusOf = (view: JobView): number => (view.state === 'completed' ? 200 : view.state === 'failed' ? 422 : 202);

/** UUIDv7 ids carry their creation time in their first 48 bits. */
function uuidV7Time(id: string): Date | undefined {
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i.test(id)) return undefined;
  return new Date(parseInt(id.slice(0, 8) + id.slice(9, 13), 16));
}

/** A completed job Redis no longer has, from its ledger row. */
export function ledgerView(entry: LedgerEntry, createdAt?: Date): JobView {
  const type = entry.type;
  return {
    id: entry.jobId,
    type,
    queue: isJobType(type) ? jobDefinition(type).queue : 'unknown',
    state: 'completed',
    progress: 100,
    attempts: null,
    result: entry.result ?? null,
    error: null,
    createdAt: (createdAt ?? uuidV7Time(entry.jobId) ?? entry.completedAt).toISOString(),
    finishedAt: entry.completedAt.toISOString(),
  };
}

/** The answer for an id neither Redis nor the ledger holds: not "does not exist", which nobody can know. */
const unknownJob = (id: string) =>
  new ApiError(
    404,
    'UNKNOWN',
    `job ${id} is unknown here: it may never have existed, or it finished and has expired (Redis keeps completed jobs a day and failed ones 7 days; the ledger keeps completed outcomes 7 days)`,
    { id },
  );

export function assertPublicJobType(type: string): asserts type is JobType {
  if (!isJobType(type)) {
    throw new InvalidError(`unknown job type "${type}"; GET /api/v1/job-types lists them`, { type, known: PUBLIC_JOB_TYPES });
  }
  const internal = jobDefinition(type).internal;
  if (internal) {
    const endpoint = internal.endpoint;
    throw new InvalidError(
      endpoint ? `job type "${type}" is internal: submit it through its own endpoint, ${endpoint}` : `job type "${type}" is internal: meshq submits it itself`,
      { type, ...(endpoint ? { endpoint } : {}) },
    );
  }
}

/** The job type's scope (its row); an unknown type needs only `read` to be told it is unknown. */
const jobTypeScope = (type: string | undefined): Scope => (type !== undefined && isJobType(type) ? jobDefinition(type).scope : 'read');

/** Cancelling or retrying a job needs what submitting its type needs; known only once the job is read. */
function requireScopeOf(request: FastifyRequest, type: string): void {
  const scope: Scope = isJobType(type) ? jobDefinition(type).scope : 'admin';
  const principal = request.principal;
  if (!principal) throw new ApiError(401, 'UNAUTHORIZED', 'authentication required');
  if (!hasScope(principal.scopes, scope)) throw forbidden(principal, scope);
}

const encodeCursor = (c: JobCursor): string => Buffer.from(JSON.stringify([c.at, c.id])).toString('base64url');
function decodeCursor(raw: string): JobCursor {
  try {
    const [at, id] = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as unknown[];
    if (typeof at === 'number' && Number.isSafeInteger(at) && typeof id === 'string' && id.length > 0) return { at, id };
  } catch {
    // answered below
  }
  throw new InvalidError(`query.cursor: "${raw.slice(0, 80)}" is not a cursor this list returned`);
}

/** How long a request waits for the first request with its Idempotency-Key to enqueue. */
const CLAIM_WAIT_MS = 15_000;
/**
 * A key row this old whose job neither Redis nor the ledger holds was accepted and then
 * lost (Redis lost it, or a failure expired, or the first request died before enqueueing):
 * the retry enqueues the same job id again, and the ledger keeps its effect to one.
 */
const STALE_CLAIM_MS = 30_000;
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function jobRoutes(api: FastifyInstance, opts: { app: AppContext }): Promise<void> {
  const { app } = opts;
  const { queues } = app;
  const prechecks = new Prechecks(app);
  const repos = (): Repositories => createRepositories(app.uow.fork(), { serverKey: app.serverKey });
  const inTransaction = <T>(fn: (r: Repositories) => Promise<T>) => app.uow.write((em) => fn(createRepositories(em, { serverKey: app.serverKey })));

  interface Submission {
    type: JobType;
    data: JobPayload<JobType>;
    actor: string;
    delay?: number;
    priority?: number;
    wait: number;
  }

  // The checks are reads: past their share of SUBMIT_TIMEOUT_MS the request answers 503
  // and enqueues nothing (the enqueue is bounded by the producer connection's timeout).
  const precheck = (s: Submission) =>
    withDeadline(Promise.resolve(jobDefinition(s.type).precheck?.(s.data, prechecks.context())), commandTimeoutOf(app.config.submitTimeoutMs), 'the database');
  // A job no worker will run says so in its answer (`warning`).
  const unservedNote = async (type: JobType) => {
    const warning = await queues.unservedWarning(type);
    return warning ? (view: JobView) => ({ ...view, warning }) : undefined;
  };

  const enqueue = (s: Submission, jobId?: string) =>
    queues.enqueueValidated(s.type, s.data, { actor: s.actor, jobId, delayMs: s.delay, priority: s.priority });

  /**
   * One key, one job, one answer. The key's row is inserted first (its primary key
   * serializes concurrent requests): the request that inserts it runs the checks and
   * enqueues; the others, and every later retry, read that job from Redis, or its
   * recorded outcome from the ledger once Redis no longer has it. A request the checks
   * refuse gives the key back, so its retries are checked (and refused) the same way.
   */
  async function submitWithKey(reply: FastifyReply, s: Submission, key: string) {
    const claim: IdempotencyRecord = {
      keyHash: sha256(`${s.actor}\n${key}`),
      actor: s.actor,
      jobId: idempotentJobId(s.actor, key),
      type: s.type,
      // Sorted-key JSON: two payloads that differ only in key order are the same request.
      requestHash: sha256(canonicalJson({ type: s.type, data: s.data, delay: s.delay ?? null, priority: s.priority ?? null })),
      createdAt: new Date(),
    };
    const deadline = Date.now() + CLAIM_WAIT_MS;
    let polls = 0;
    for (;;) {
      if (await inTransaction((r) => r.idempotency.claim({ ...claim, createdAt: new Date() }))) {
        let job: Job;
        try {
          await precheck(s);
          job = await enqueue(s, claim.jobId);
        } catch (err) {
          // An earlier request with this key may have been answered 503 after Redis had
          // taken its job (a primary failing over mid-command): that job may have run, and
          // its own effect then fails this request's checks. It is this request's answer.
          if (!isUnavailable(err)) {
            const earlier = await queues.findOf(s.type, claim.jobId).catch(() => undefined);
            if (earlier?.name === s.type) return replyWithJob(reply, queues, earlier, s.wait);
            const done = await repos().ledger.get(claim.jobId).catch(() => undefined);
            if (done) return sendView(reply, ledgerView(done, claim.createdAt));
          }
          await inTransaction((r) => r.idempotency.release(claim.keyHash, claim.jobId)).catch((e: unknown) =>
            api.log.error({ err: e, jobId: claim.jobId }, 'giving an idempotency key back failed'),
          );
          throw err;
        }
        return replyWithJob(reply, queues, job, s.wait, await unservedNote(s.type));
      }
      for (;;) {
        const held = await repos().idempotency.get(claim.keyHash);
        if (!held) break; // given back: claim it again
        if (held.type !== claim.type || held.requestHash !== claim.requestHash) {
          throw new ConflictError('this Idempotency-Key was already used for a different request', { jobId: held.jobId });
        }
        const job = await queues.findOf(s.type, held.jobId);
        if (job) return replyWithJob(reply, queues, job, s.wait);
        const done = await repos().ledger.get(held.jobId);
        if (done) return sendView(reply, ledgerView(done, held.createdAt));
        if (Date.now() - held.createdAt.getTime() > STALE_CLAIM_MS) return replyWithJob(reply, queues, await enqueue(s, held.jobId), s.wait);
        if (Date.now() > deadline) {
          void reply.header('retry-after', '1');
          throw new ApiError(503, 'UNAVAILABLE', 'the first request with this Idempotency-Key is still being accepted; retry shortly');
        }
        await pause(Math.min(200, 25 * 2 ** polls++));
      }
    }
  }

  api.post(
    '/jobs',
    {
      config: { scope: (request) => jobTypeScope((request.body as { type?: string } | undefined)?.type) },
      schema: {
        tags: ['jobs'],
        summary: 'Submit a job (every write is a job)',
        description:
          'Answers 202 with the job; with `wait`, 200 once it completed or 422 (with the job and its `error`) once it failed within `wait` ms. ' +
          '`delay` holds the job back (cancel it meanwhile with DELETE /api/v1/jobs/{id}); `priority` orders it. Payload schemas: GET /api/v1/job-types.',
        body: submitBody,
        querystring: waitQuery,
        headers: submitHeaders,
        response: jobAnswers(),
      },
    },
    async (request, reply) => {
      const { type, data, delay, priority } = request.body as z.infer<typeof submitBody>;
      const { wait } = request.query as z.infer<typeof waitQuery>;
      const key = (request.headers as z.infer<typeof submitHeaders>)['idempotency-key'];
      assertPublicJobType(type);

      const parsed = jobDefinition(type).schema.safeParse(data ?? {});
      if (!parsed.success) throw new InvalidError(describeZodError(parsed.error, type), compactIssues(parsed.error.issues));
      const submission: Submission = { type, data: parsed.data as JobPayload<JobType>, actor: request.actor, delay, priority, wait };
      if (key) return submitWithKey(reply, submission, key);

      await precheck(submission);
      const job = await enqueue(submission);
      request.log.info({ jobId: job.id, type }, 'job submitted');
      return replyWithJob(reply, queues, job, wait, await unservedNote(type));
    },
  );

  api.get(
    '/jobs/:id',
    {
      config: { scope: 'read' },
      schema: {
        tags: ['jobs'],
        summary: 'A job: state, progress, attempts, result or error',
        description: 'A completed job Redis no longer keeps is answered from the ledger (attempts null). 404 UNKNOWN: neither holds the id.',
        params: jobParams,
        response: { 200: json('The job', jobSchema), ...errorResponses() },
      },
    },
    async (request) => {
      const { id } = request.params as z.infer<typeof jobParams>;
      const job = await queues.find(id);
      if (job) return queues.view(job);
      const done = await repos().ledger.get(id);
      if (done) return ledgerView(done);
      throw unknownJob(id);
    },
  );

  /** Cancel and retry act on jobs Redis holds: a completed job only the ledger remembers is finished. */
  async function jobForControl(request: FastifyRequest, id: string, action: string): Promise<Job> {
    const job = await queues.find(id);
    if (job) {
      requireScopeOf(request, job.name);
      return job;
    }
    const done = await repos().ledger.get(id);
    if (!done) throw unknownJob(id);
    requireScopeOf(request, done.type);
    throw new ConflictError(`job ${id} has completed: it cannot be ${action}`, { id, state: 'completed' });
  }

  api.delete(
    '/jobs/:id',
    {
      config: { scope: 'read' },
      schema: {
        tags: ['jobs'],
        summary: 'Cancel a waiting or delayed job',
        description: "Needs the scope of the job's type. 409 when the job is active or finished (its state in `details`).",
        params: jobParams,
        response: { 200: json('Cancelled: removed before it ran', cancelledSchema), ...errorResponses() },
      },
    },
    async (request) => {
      const { id } = request.params as z.infer<typeof jobParams>;
      const job = await jobForControl(request, id, 'cancelled');
      const outcome = await queues.cancel(job);
      if (outcome === 'unknown') throw unknownJob(id);
      if (outcome !== 'cancelled') {
        throw new ConflictError(`job ${id} is ${outcome}: only a waiting or delayed job can be cancelled`, { id, state: outcome });
      }
      // The key that made it is given back: a cancelled request is not an outcome to repeat.
      await inTransaction((r) => r.idempotency.releaseJob(id));
      request.log.info({ jobId: id, type: job.name }, 'job cancelled');
      return { id, type: job.name, state: 'cancelled' };
    },
  );

  api.post(
    '/jobs/:id/retry',
    {
      config: { scope: 'read' },
      schema: {
        tags: ['jobs'],
        summary: 'Run a failed job again',
        description:
          "Needs the scope of the job's type. The job keeps its id, so its ledger row still applies its effect at most once. 409 unless the job failed. Answers like a submission (`wait`).",
        params: jobParams,
        querystring: waitQuery,
        response: jobAnswers(),
      },
    },
    async (request, reply) => {
      const { id } = request.params as z.infer<typeof jobParams>;
      const { wait } = request.query as z.infer<typeof waitQuery>;
      const job = await jobForControl(request, id, 'retried');
      const outcome = await queues.retry(job);
      if (outcome === 'unknown') throw unknownJob(id);
      if (outcome !== 'retried') throw new ConflictError(`job ${id} is ${outcome}: only a failed job can be retried`, { id, state: outcome });
      request.log.info({ jobId: id, type: job.name }, 'job retried');
      return replyWithJob(reply, queues, (await queues.find(id)) ?? job, wait);
    },
  );

  const listQuery = z.strictObject({
    type: z
      .string()
      .refine(isJobType, { message: 'not a job type (GET /api/v1/job-types lists them)' })
      .optional(),
    state: z.enum(JOB_STATES).optional(),
    actor: z.string().min(1).max(200).optional().describe('Who submitted: admin, token:<id>, system, mqtt'),
    since: z.iso.datetime({ offset: true }).optional().describe('Created at or after (ISO 8601)'),
    until: z.iso.datetime({ offset: true }).optional().describe('Created before (ISO 8601)'),
    limit: z.coerce.number().int().min(1).max(500).default(50),
    cursor: z.string().min(1).max(500).optional().describe('`next` of the previous page'),
  });
  api.get(
    '/jobs',
    {
      config: { scope: 'read' },
      schema: {
        tags: ['jobs'],
        summary: 'Jobs Redis holds, newest first, a page at a time (cursor)',
        querystring: listQuery,
        response: { 200: json('A page of jobs', pageOf(jobSchema)), ...errorResponses() },
      },
    },
    async (request) => {
      const q = request.query as z.infer<typeof listQuery>;
      const page = await queues.list({
        type: q.type as JobType | undefined,
        state: q.state,
        actor: q.actor,
        since: q.since ? new Date(q.since) : undefined,
        until: q.until ? new Date(q.until) : undefined,
        limit: q.limit,
        cursor: q.cursor ? decodeCursor(q.cursor) : undefined,
      });
      return { items: page.items, next: page.next ? encodeCursor(page.next) : null };
    },
  );

  let catalogue: object[] | undefined;
  const jobTypesSchema = {
    tags: ['jobs'],
    summary: 'Every job type, its queue, the token scope it needs and its payload JSON Schema',
    response: { 200: json('Every job type (one page)', pageOf(jobTypeSchema)), ...errorResponses() },
  };
  api.get('/job-types', { config: { scope: 'read' }, schema: jobTypesSchema }, async () => {
    catalogue ??= JOB_TYPES.map((type) => {
      const def = jobDefinition(type);
      const endpoint = def.internal?.endpoint;
      return {
        type,
        queue: def.queue,
        scope: def.scope,
        description: def.description,
        internal: def.internal !== undefined,
        ...(endpoint ? { endpoint } : {}),
        schema: toJsonSchema(def.schema),
      };
    });
    return { items: catalogue, next: null };
  });
}
