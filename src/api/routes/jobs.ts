/**
 * Writes: POST /jobs validates a payload with its job type's schema, runs the cheap
 * semantic check of its job table row (precheck; see src/jobs/prechecks.ts) and enqueues;
 * nothing is enqueued for a rejected request. Plus job status, job listing and the
 * job-type catalogue (each type's queue, scope and payload JSON Schema).
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Job } from 'bullmq';
import { z } from 'zod';
import type { AppContext } from '../context.js';
import { ConflictError, InvalidError, NotFoundError } from '../../domain/errors.js';
import { JOB_TYPES, PUBLIC_JOB_TYPES, isJobType, jobDefinition, type JobPayload, type JobType } from '../../jobs/table.js';
import { compactIssues, describeZodError } from '../../domain/zod-errors.js';
import { idempotentJobId, type JobQueues, type JobView } from '../../jobs/queue-client.js';
import { canonicalJson } from '../../jobs/envelope.js';
import { Prechecks } from '../../jobs/prechecks.js';
import { toJsonSchema } from '../validation.js';
import type { Scope } from '../../domain/scopes.js';

export const MAX_WAIT_MS = 30_000;

export const waitQuery = z.strictObject({
  wait: z.coerce.number().int().min(0).max(MAX_WAIT_MS).default(0).describe('Milliseconds to wait for the job to finish'),
});

const submitBody = z.strictObject({
  type: z.string().min(1).describe('A job type from GET /api/v1/job-types'),
  data: z.unknown().optional().describe("The job's payload: see its JSON Schema in GET /api/v1/job-types"),
});

// Loose: Fastify replaces request.headers with the validated value, which must keep the rest.
const submitHeaders = z.looseObject({
  'idempotency-key': z
    .string()
    .min(1)
    .max(200)
    .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces')
    .optional()
    .describe('The same key from the same caller submits one job, once'),
});

const JOB_STATES = ['waiting', 'delayed', 'active', 'completed', 'failed'] as const;

/** 202 while the job is pending; 200 once it finished (completed or failed) within `wait`. */
export async function replyWithJob(reply: FastifyReply, queues: JobQueues, job: Job, waitMs: number, extra?: (view: JobView) => object) {
  const view = waitMs > 0 ? await queues.waitFor(job, waitMs) : await queues.view(job);
  const finished = view.state === 'completed' || view.state === 'failed';
  void reply.status(finished ? 200 : 202).header('location', `/api/v1/jobs/${encodeURIComponent(view.id)}`);
  return extra ? extra(view) : view;
}

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

export async function jobRoutes(api: FastifyInstance, opts: { app: AppContext }): Promise<void> {
  const { app } = opts;
  const { queues } = app;
  const prechecks = new Prechecks(app);

  api.post(
    '/jobs',
    {
      config: { scope: (request) => jobTypeScope((request.body as { type?: string } | undefined)?.type) },
      schema: {
        tags: ['jobs'],
        summary: 'Submit a job (every write is a job)',
        description: 'Answers 202 with the job, or 200 when it finished within `wait` ms. Payload schemas: GET /api/v1/job-types.',
        body: submitBody,
        querystring: waitQuery,
        headers: submitHeaders,
      },
    },
    async (request, reply) => {
      const { type, data } = request.body as z.infer<typeof submitBody>;
      const { wait } = request.query as z.infer<typeof waitQuery>;
      const key = (request.headers as z.infer<typeof submitHeaders>)['idempotency-key'];
      assertPublicJobType(type);

      const parsed = jobDefinition(type).schema.safeParse(data ?? {});
      if (!parsed.success) throw new InvalidError(describeZodError(parsed.error, type), compactIssues(parsed.error.issues));

      // A repeated key answers with the job it made the first time, before any semantic
      // check: the first run's effect (a config now named so) must not turn the retry
      // into a 409.
      if (key) {
        const existing = await queues.find(idempotentJobId(request.actor, key));
        if (existing) {
          // Sorted-key JSON: two payloads that differ only in key order are the same request.
          const same = existing.name === type && canonicalJson((existing.data as { payload?: unknown }).payload) === canonicalJson(parsed.data);
          if (!same) throw new ConflictError('this Idempotency-Key was already used for a different request', { jobId: existing.id });
          return replyWithJob(reply, queues, existing, wait);
        }
      }

      const def = jobDefinition(type);
      await def.precheck?.(parsed.data, prechecks.context());
      const job = await queues.enqueueValidated(type, parsed.data as JobPayload<JobType>, { actor: request.actor, idempotencyKey: key });
      request.log.info({ jobId: job.id, type }, 'job submitted');
      return replyWithJob(reply, queues, job, wait);
    },
  );

  api.get(
    '/jobs/:id',
    { config: { scope: 'read' }, schema: { tags: ['jobs'], summary: 'A job: state, progress, attempts, result or error', params: z.strictObject({ id: z.string().min(1).max(200) }) } },
    async (request) => {
      const { id } = request.params as { id: string };
      const job = await queues.find(id);
      if (!job) throw new NotFoundError('job', id);
      return queues.view(job);
    },
  );

  const listQuery = z.strictObject({
    type: z
      .string()
      .refine(isJobType, { message: 'not a job type (GET /api/v1/job-types lists them)' })
      .optional(),
    state: z.enum(JOB_STATES).optional(),
    limit: z.coerce.number().int().min(1).max(500).default(50),
  });
  api.get('/jobs', { config: { scope: 'read' }, schema: { tags: ['jobs'], summary: 'Recent jobs, newest first', querystring: listQuery } }, async (request) => {
    const q = request.query as z.infer<typeof listQuery>;
    // BullMQ has no cursor over several queues and states; the list is bounded by limit.
    return { items: await queues.list({ type: q.type, state: q.state, limit: q.limit }), next: null };
  });

  let catalogue: object[] | undefined;
  api.get('/job-types', { config: { scope: 'read' }, schema: { tags: ['jobs'], summary: 'Every job type, its queue, the token scope it needs and its payload JSON Schema' } }, async () => {
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
