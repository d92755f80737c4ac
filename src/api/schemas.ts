/**
 * What the API answers, as zod schemas, and the typed body of POST /api/v1/jobs: the
 * OpenAPI document's response schemas (routes declare them in `schema.response`), so that
 * a client generated from the document is typed end to end.
 *
 * They document; they do not shape answers. Responses are still written with
 * JSON.stringify (the serializer compiler in docs.ts), so a field missing here would
 * never be dropped from an answer. Instead the type checks at the bottom keep every
 * schema equal to the view its repository or the queue client returns, and
 * test/integration/openapi.test.ts checks real answers against them.
 *
 * Schemas registered in COMPONENTS appear once in the document's `components.schemas`
 * and are referenced from each route (docs.ts).
 */
import { z } from 'zod';
import { SCOPES } from '../domain/scopes.js';
import { awgSchema, forwardProtocolSchema, nodeKindSchema, protocolSchema } from '../domain/validation.js';
import { QUEUE_NAMES } from '../jobs/names.js';
import type { JobView } from '../jobs/queue-client.js';
import { PUBLIC_JOB_TYPES, jobDefinition, type JobType } from '../jobs/table.js';
import type { Repositories } from '../repositories/index.js';

/**
 * Every schema with a name of its own in the document (`#/components/schemas/<id>`), with
 * how it is converted (request bodies as `input`: fields with defaults are optional). The
 * id is zod metadata, so z.toJSONSchema refers to a named schema instead of inlining it.
 */
export const COMPONENTS = new Map<string, { schema: z.ZodType; io: 'input' | 'output' }>();
const named = <T extends z.ZodType>(id: string, schema: T, io: 'input' | 'output' = 'output'): T => {
  const withId = schema.meta({ id }) as T;
  COMPONENTS.set(id, { schema: withId, io });
  return withId;
};

/**
 * A route schema part documented as something other than what validates it: the body of
 * POST /api/v1/jobs is validated in two steps (the envelope, then the payload with the
 * job type's own schema, for messages that name the type) but documented as one `oneOf`;
 * the restore upload is read part by part by its handler but documented as a form.
 */
const DOCUMENTED_AS = new WeakMap<z.ZodType, object>();
export function documentedAs<T extends z.ZodType>(schema: T, document: object): T {
  DOCUMENTED_AS.set(schema, document);
  return schema;
}
export const documentationOf = (schema: z.ZodType): object | undefined => DOCUMENTED_AS.get(schema);

/** A response of JSON `schema` (a route's `schema.response[status]`). */
export const json = (description: string, schema: z.ZodType) => ({ description, content: { 'application/json': { schema } } });
/** A response that is not JSON: `text/plain`, `text/event-stream`, a file. */
export const media = (description: string, type: string, schema: z.ZodType = z.string()) => ({ description, content: { [type]: { schema } } });

/** Every route answers errors as `{error: {code, message, details?}}`. */
export const errorResponses = () => ({
  '4xx': json('A client error: invalid input (400), unauthorized (401), forbidden (403), not found (404), conflict (409), too many requests (429), ...', errorSchema),
  '5xx': json('A service meshq needs is unavailable (503, with Retry-After), or an internal error (500)', errorSchema),
});

const time = () => z.string().meta({ format: 'date-time' });
const uuid = () => z.string().meta({ format: 'uuid' });

export const errorSchema = named(
  'Error',
  z.strictObject({
    error: z.strictObject({
      code: z.string().describe('Stable and machine-readable: INVALID, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, CONFLICT, UNAVAILABLE, ...'),
      message: z.string().describe('For a person: says what is wrong and, where it can, what to do'),
      details: z.unknown().optional().describe('Structured details (for 400 INVALID: the issues, each with its path)'),
    }),
  }),
);

export const JOB_STATES = ['waiting', 'delayed', 'active', 'completed', 'failed'] as const;

export const jobSchema = named(
  'Job',
  z.strictObject({
    id: z.string(),
    type: z.string().describe('The job type (GET /api/v1/job-types)'),
    queue: z.string(),
    state: z.enum(JOB_STATES),
    progress: z.unknown().describe('0-100, or what the processor last reported; 100 once completed'),
    attempts: z.number().int().nullable().describe('Runs started; null when answered from the ledger'),
    result: z.unknown().describe("The processor's result once completed, else null"),
    error: z.strictObject({ code: z.string(), message: z.string() }).nullable().describe('Why it failed, once failed, else null'),
    createdAt: time(),
    finishedAt: time().nullable(),
    warning: z.string().optional().describe('On a submission: no worker serves the queue, so the job waits until one starts'),
  }),
);

/** A page of a list: `next` is the cursor of the next page (`?cursor=`), null on the last. */
export const pageOf = (item: z.ZodType) => z.strictObject({ items: z.array(item), next: z.string().nullable() });

export const jobTypeSchema = named(
  'JobTypeInfo',
  z.strictObject({
    type: z.string(),
    queue: z.enum(QUEUE_NAMES as [string, ...string[]]),
    scope: z.enum(SCOPES),
    description: z.string(),
    internal: z.boolean().describe('Submitted by meshq itself or through `endpoint`, never through POST /api/v1/jobs'),
    endpoint: z.string().optional(),
    schema: z.record(z.string(), z.unknown()).describe('The payload (`data`) as JSON Schema'),
  }),
);

export const cancelledSchema = z.strictObject({ id: z.string(), type: z.string(), state: z.literal('cancelled') });

export const configSchema = named(
  'Config',
  z.strictObject({
    id: uuid(),
    name: z.string(),
    subnet: z.string(),
    listenPort: z.number().int(),
    dns: z.array(z.string()),
    mtu: z.number().int(),
    protocol: protocolSchema,
    awg: awgSchema.nullable(),
    createdAt: time(),
    updatedAt: time(),
  }),
);

export const nodeSchema = named(
  'Node',
  z.strictObject({
    id: uuid(),
    configId: uuid(),
    name: z.string(),
    kind: nodeKindSchema,
    address: z.string(),
    endpoint: z.string().nullable(),
    listenPort: z.number().int().nullable(),
    publicKey: z.string(),
    keyMode: z.enum(['server', 'agent']).describe('server: meshq holds the private key; agent: the node does'),
    clientInitialized: z.boolean(),
    online: z.boolean(),
    lastSeenAt: time().nullable(),
    createdAt: time(),
    updatedAt: time(),
  }),
);

const credentialSchema = z.strictObject({ username: z.string(), clientId: z.string(), version: z.number().int(), rotatedAt: time() });

const nodeSyncShape = {
  desired: z.number().int().describe('The revision meshq published to the node'),
  applied: z.number().int().nullable().describe("The revision the node's agent acknowledged; null before the first"),
  appliedAt: time().nullable(),
};

export const nodeDetailSchema = named(
  'NodeDetail',
  nodeSchema.extend({
    credential: credentialSchema.nullable().describe('The MQTT credential of a dynamic node (never its hash)'),
    sync: z.strictObject(nodeSyncShape),
  }),
);

export const laggingNodeSchema = named(
  'LaggingNode',
  z.strictObject({ nodeId: uuid(), name: z.string(), desiredAt: time(), ...nodeSyncShape }),
);

export const linkSchema = named(
  'Link',
  z.strictObject({
    id: uuid(),
    configId: uuid(),
    fromNodeId: uuid(),
    toNodeId: uuid(),
    linkGroupId: uuid().describe('Shared by both directions of a pair'),
    allowedIps: z.array(z.string()),
    persistentKeepalive: z.number().int().nullable(),
  }),
);

export const portForwardSchema = named(
  'PortForward',
  z.strictObject({
    id: uuid(),
    configId: uuid(),
    fromNodeId: uuid(),
    fromPort: z.number().int(),
    toNodeId: uuid(),
    toPort: z.number().int(),
    protocol: forwardProtocolSchema,
    enabled: z.boolean(),
    createdAt: time(),
  }),
);

export const settingSchema = named('Setting', z.strictObject({ key: z.string(), value: z.unknown(), updatedAt: time() }));

export const tokenSchema = named(
  'Token',
  z.strictObject({
    id: uuid(),
    name: z.string(),
    scopes: z.array(z.string()),
    expiresAt: time().nullable(),
    createdAt: time(),
    lastUsedAt: time().nullable(),
  }),
);

export const auditSchema = named(
  'AuditEntry',
  z.strictObject({
    id: uuid(),
    at: time(),
    actor: z.string(),
    action: z.string(),
    entityType: z.string(),
    entityId: z.string().nullable(),
    detail: z.record(z.string(), z.unknown()),
  }),
);

export const snapshotSchema = named(
  'Snapshot',
  z.strictObject({
    id: uuid(),
    kind: z.enum(['export', 'staged']),
    createdAt: time(),
    size: z.number().int(),
    sha256: z.string(),
    schemaVersion: z.string(),
    counts: z.record(z.string(), z.number().int()).describe('Rows per table'),
  }),
);

export const brokerStatusSchema = named(
  'BrokerStatus',
  z.strictObject({
    enabled: z.boolean(),
    state: z.enum(['disabled', 'synced', 'pending', 'error']),
    reachable: z.boolean().nullable(),
    epoch: z.number().int(),
    syncedEpoch: z.number().int(),
    pending: z.boolean(),
    pendingSeq: z.number().int(),
    appliedSeq: z.number().int(),
    lastError: z.string().nullable(),
    lastSyncAt: z.string().nullable(),
    authorization: z.strictObject({ ok: z.boolean(), reason: z.string().nullable() }).nullable(),
  }),
);

export const credentialRotationSchema = z.strictObject({
  job: jobSchema,
  username: z.string(),
  clientId: z.string(),
  password: z.string().describe('Shown only in this answer'),
});

export const tokenCreatedSchema = z.strictObject({
  job: jobSchema,
  id: uuid(),
  token: z.string().describe('Shown only in this answer; send it as `Authorization: Bearer <token>`'),
});

const checkSchema = z.strictObject({ ok: z.boolean(), error: z.string().optional() });
export const readinessSchema = named(
  'Readiness',
  z.strictObject({
    status: z.enum(['ready', 'unavailable']),
    failed: z.array(z.string()),
    checks: z.strictObject({ database: checkSchema, redis: checkSchema, migrations: checkSchema }),
    durability: z.strictObject({ redis: z.enum(['aof', 'none', 'unknown']), required: z.enum(['aof', 'none']), note: z.string().optional() }),
    warnings: z.array(z.string()),
    workers: z.record(z.string(), z.number().int().nullable()).optional().describe('Workers per queue (with credentials of `read` scope)'),
  }),
);

export const livenessSchema = z.strictObject({ status: z.literal('ok') });

/**
 * The answers of a route that submits a job: its status says the job's state (202
 * pending, 200 completed within `wait`, 422 failed within `wait`); `body` is the job or
 * an object holding it.
 */
export const jobAnswers = (body: z.ZodType = jobSchema) => ({
  200: json('The job completed within `wait`', body),
  202: json('Accepted: the job is waiting, delayed or active', body),
  422: json("The job failed within `wait`: the job's `error` says why", body),
  ...errorResponses(),
});

// ---- POST /api/v1/jobs: one variant per public job type, from the job table ----

/** Fields of a submission besides `type` and `data` (the route validates them: jobs.ts). */
export interface SubmissionOptions {
  delay: z.ZodType;
  priority: z.ZodType;
}

/** `JobSubmission.config.create`: the component of one job type's submission. */
export const submissionComponent = (type: JobType): string => `JobSubmission.${type}`;

/**
 * One strict object per public job type: `type` its name, `data` its payload schema from
 * the job table. `data` may be left out only where the payload accepts `{}` (the route
 * parses a missing `data` as `{}`). Internal types are not here: they are refused.
 */
function submissionVariants(options: SubmissionOptions): Map<JobType, z.ZodType> {
  const variants = new Map<JobType, z.ZodType>();
  for (const type of PUBLIC_JOB_TYPES) {
    const def = jobDefinition(type);
    const data = def.schema.safeParse({}).success ? def.schema.optional() : def.schema;
    const variant = z
      .strictObject({ type: z.literal(type), data, delay: options.delay.optional(), priority: options.priority.optional() })
      .describe(`${type}: ${def.description} (token scope ${def.scope})`);
    variants.set(type, named(submissionComponent(type), variant, 'input'));
  }
  return variants;
}

/**
 * JSON Schema of what a client sends. A field with a default is optional, and its default
 * is said in its description rather than as `default`: generators type a property with a
 * `default` as always present (openapi-typescript does unless told otherwise), which
 * would make a client spell out every defaulted field.
 */
export const requestJsonSchema = (schema: z.ZodType) =>
  z.toJSONSchema(schema, {
    io: 'input',
    unrepresentable: 'any',
    target: 'openapi-3.0',
    override: ({ jsonSchema }) => {
      if (!('default' in jsonSchema)) return;
      const said = `Default: ${JSON.stringify(jsonSchema.default)}.`;
      jsonSchema.description = jsonSchema.description ? `${jsonSchema.description}. ${said}` : said;
      delete jsonSchema.default;
    },
  }) as Record<string, unknown>;

/**
 * The documented body of POST /api/v1/jobs: a `oneOf` of every public job type's variant,
 * discriminated by `type`. Call once per process (it names a component per job type).
 */
export function jobSubmissionDocument(options: SubmissionOptions): object {
  const ref = (type: JobType) => `#/components/schemas/${submissionComponent(type)}`;
  const types = [...submissionVariants(options).keys()];
  return {
    description: 'A job: `type` names it, `data` is its payload. GET /api/v1/job-types lists the types with their scopes.',
    oneOf: types.map((type) => ({ $ref: ref(type) })),
    discriminator: { propertyName: 'type', mapping: Object.fromEntries(types.map((type) => [type, ref(type)])) },
  };
}

// ---- Compile-time: each schema equals what its route really returns ----

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const same = <A, B>(ok: Same<A, B>): Same<A, B> => ok;
type Item<F extends (...args: never[]) => Promise<{ items: unknown[] }>> = Awaited<ReturnType<F>>['items'][number];
type Found<F extends (...args: never[]) => Promise<unknown>> = NonNullable<Awaited<ReturnType<F>>>;

same<Omit<z.output<typeof jobSchema>, 'warning'>, JobView>(true);
same<z.output<typeof configSchema>, Item<Repositories['configs']['list']>>(true);
same<z.output<typeof nodeSchema>, Item<Repositories['nodes']['list']>>(true);
same<z.output<typeof nodeDetailSchema>['sync'], Awaited<ReturnType<Repositories['nodeSync']['view']>>>(true);
same<NonNullable<z.output<typeof nodeDetailSchema>['credential']>, Found<Repositories['credentials']['forNode']>>(true);
same<z.output<typeof laggingNodeSchema>, Awaited<ReturnType<Repositories['nodeSync']['lagging']>>[number]>(true);
same<z.output<typeof linkSchema>, Item<Repositories['links']['list']>>(true);
same<z.output<typeof portForwardSchema>, Item<Repositories['forwards']['list']>>(true);
same<z.output<typeof settingSchema>, Item<Repositories['settings']['list']>>(true);
same<z.output<typeof tokenSchema>, Item<Repositories['tokens']['list']>>(true);
same<z.output<typeof auditSchema>, Item<Repositories['audit']['list']>>(true);
same<z.output<typeof snapshotSchema>, Item<Repositories['snapshots']['listExports']>>(true);
