/**
 * Job payload schemas: checked by the API when a job is submitted (400) and again by the
 * worker when it is dequeued (the queue is not trusted to hold what the API put in).
 *
 * Every object is strict: an unknown field is an error, not silently dropped, so a typo
 * ("listen_port") is reported instead of quietly doing nothing. No transforms: each schema
 * is also published as JSON Schema (z.toJSONSchema) at GET /api/v1/job-types, so only
 * representable constructs are used. Cross-field rules (superRefine) are checked here but
 * do not appear in the JSON Schema; the messages say what is wrong.
 *
 * No payload carries a secret: rotation and token creation carry the hash the API made.
 */
import { z } from 'zod';
import { DEFAULT_TOKEN_SCOPES, SCOPES } from '../domain/scopes.js';
import {
  awgSchema,
  configNameSchema,
  DEFAULT_MTU,
  dnsSchema,
  endpointSchema,
  forwardProtocolSchema,
  ipAddressSchema,
  listenPortSchema,
  mtuSchema,
  nodeKindSchema,
  nodeNameSchema,
  persistentKeepaliveSchema,
  portSchema,
  protocolAwgProblem,
  protocolSchema,
  SETTING_KEY,
  settingKeySchema,
  settingValueSchema,
  subnetSchema,
  wireguardKeySchema,
} from '../domain/validation.js';

const show = (v: unknown) => (typeof v === 'string' ? JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v) : typeof v);

const uuid = () =>
  z.uuid({ error: (iss) => (iss.input === undefined ? 'is required' : `must be a UUID (got ${show(iss.input)})`) });

const sha256Hex = () =>
  z.string().regex(/^[0-9a-f]{64}$/, { error: 'must be 64 lowercase hex characters (a sha256 hash)' });

/** At least one field besides `id`: an update that changes nothing is a client mistake. */
const hasChanges = (value: Record<string, unknown>) => Object.keys(value).some((k) => k !== 'id');
const NO_CHANGES = { error: 'names no field to change' };

export const DEFAULT_LISTEN_PORT = 51820;
export const DEFAULT_PERSISTENT_KEEPALIVE = 25;

export const byId = z.strictObject({ id: uuid() });

export const configCreate = z
  .strictObject({
    name: configNameSchema,
    subnet: subnetSchema,
    listenPort: listenPortSchema.default(DEFAULT_LISTEN_PORT),
    dns: dnsSchema.default([]),
    mtu: mtuSchema.default(DEFAULT_MTU),
    protocol: protocolSchema.default('wireguard'),
    awg: awgSchema.nullable().optional(),
  })
  .superRefine((c, ctx) => {
    const problem = protocolAwgProblem(c.protocol, c.awg);
    if (problem) ctx.addIssue({ code: 'custom', path: ['awg'], message: problem, input: c.awg });
  });

/**
 * The subnet is fixed at creation: changing it would re-address every node and link.
 * `awg: null` clears the AmneziaWG parameters. Whether protocol and awg fit together is
 * checked against the stored config by the processor, since either may be absent here.
 */
export const configUpdate = z
  .strictObject({
    id: uuid(),
    name: configNameSchema.optional(),
    listenPort: listenPortSchema.optional(),
    dns: dnsSchema.optional(),
    mtu: mtuSchema.optional(),
    protocol: protocolSchema.optional(),
    awg: awgSchema.nullable().optional(),
  })
  .refine(hasChanges, NO_CHANGES);

export const nodeCreate = z.strictObject({
  configId: uuid(),
  name: nodeNameSchema,
  kind: nodeKindSchema,
  /** Allocated (lowest free) when absent. */
  address: ipAddressSchema.optional(),
  endpoint: endpointSchema.nullable().optional(),
  listenPort: portSchema.nullable().optional(),
  /**
   * The node's own WireGuard public key (base64 x25519, as `wg pubkey` prints it): its
   * agent holds the private key, and meshq stores none. Absent: meshq generates the pair.
   */
  publicKey: wireguardKeySchema.optional(),
});

/**
 * `null` clears the endpoint or listen port. `publicKey` is how an agent that holds its
 * own key rotates it; given for a node whose key meshq holds, meshq forgets that private
 * key and the agent holds the node's key from then on.
 */
export const nodeUpdate = z
  .strictObject({
    id: uuid(),
    name: nodeNameSchema.optional(),
    endpoint: endpointSchema.nullable().optional(),
    listenPort: portSchema.nullable().optional(),
    publicKey: wireguardKeySchema.optional(),
  })
  .refine(hasChanges, NO_CHANGES);

export const MAX_ALLOWED_IPS = 64;

/**
 * One peer pair between two nodes of a config, both directions. `allowedIps` is what
 * fromNode routes through toNode (default: toNode's host address, e.g. a gateway's LAN
 * added); toNode always routes fromNode's host address. `persistentKeepalive` applies to
 * both directions, as in mesh.generate.
 */
export const linkCreate = z.strictObject({
  configId: uuid(),
  fromNodeId: uuid(),
  toNodeId: uuid(),
  allowedIps: z
    .array(subnetSchema)
    .min(1, { error: 'must list at least one CIDR' })
    .max(MAX_ALLOWED_IPS, { error: `must list at most ${MAX_ALLOWED_IPS} CIDRs` })
    .refine((a) => new Set(a).size === a.length, { error: 'lists a CIDR twice' })
    .optional(),
  /** Seconds; 0 or null: no keepalive. */
  persistentKeepalive: persistentKeepaliveSchema.default(DEFAULT_PERSISTENT_KEEPALIVE),
});

/** The API generated the password, showed it once and sends only EMQX's hash and salt. */
export const nodeRotateCredentials = z.strictObject({
  nodeId: uuid(),
  passwordHash: sha256Hex(),
  salt: z.string().regex(/^[0-9a-f]{16,64}$/, { error: 'must be 16-64 lowercase hex characters' }),
});

export const nodePresence = z.strictObject({
  nodeId: uuid(),
  online: z.boolean(),
  /** When the broker saw the change; older events than the recorded one are ignored. */
  at: z.iso.datetime({ offset: true, error: 'must be an ISO 8601 date-time with a zone (e.g. 2025-01-31T12:00:00Z)' }),
});

export const meshGenerate = z.strictObject({
  configId: uuid(),
  /** Seconds; 0 or null: no keepalive. */
  persistentKeepalive: persistentKeepaliveSchema.default(DEFAULT_PERSISTENT_KEEPALIVE),
});

export const portForwardCreate = z.strictObject({
  configId: uuid(),
  fromNodeId: uuid(),
  fromPort: portSchema,
  toNodeId: uuid(),
  toPort: portSchema,
  protocol: forwardProtocolSchema,
});

export { SETTING_KEY };
export const MAX_SETTINGS_PER_UPDATE = 100;

/** key -> any JSON value within the stored-value rules; `null` removes the key. */
export const settingsUpdate = z.strictObject({
  // A refused key's own message ("setting key … must be …") instead of zod's "Invalid key in record".
  values: z
    .record(settingKeySchema, settingValueSchema, {
      error: (iss) => (iss.code === 'invalid_key' ? iss.issues[0]?.message : undefined),
    })
    .refine(
      (v) => {
        const n = Object.keys(v).length;
        return n >= 1 && n <= MAX_SETTINGS_PER_UPDATE;
      },
      { error: `must hold 1-${MAX_SETTINGS_PER_UPDATE} keys` },
    ),
});

const tokenScope = z.enum(SCOPES, { error: `a scope is one of ${SCOPES.join(', ')}` });

/** The API generated the token, showed it once and sends only its sha256. */
export const tokenCreate = z.strictObject({
  id: uuid(),
  name: z.string().min(1, { error: 'must not be empty' }).max(64, { error: 'is longer than 64 characters' }),
  tokenHash: sha256Hex(),
  scopes: z
    .array(tokenScope)
    .min(1)
    .max(SCOPES.length)
    .refine((a) => new Set(a).size === a.length, { error: 'lists a scope twice' })
    .default([...DEFAULT_TOKEN_SCOPES]),
  /** ISO 8601 time after which the token authenticates no more; absent or null: never. */
  expiresAt: z.iso.datetime({ offset: true, error: 'must be an ISO 8601 date-time such as 2030-01-31T00:00:00Z' }).nullable().optional(),
});

export type ById = z.infer<typeof byId>;
export type ConfigCreate = z.infer<typeof configCreate>;
export type ConfigUpdate = z.infer<typeof configUpdate>;
export type NodeCreate = z.infer<typeof nodeCreate>;
export type NodeUpdate = z.infer<typeof nodeUpdate>;
export type NodeRotateCredentials = z.infer<typeof nodeRotateCredentials>;
export type LinkCreate = z.infer<typeof linkCreate>;
export type NodePresence = z.infer<typeof nodePresence>;
export type MeshGenerate = z.infer<typeof meshGenerate>;
export type PortForwardCreate = z.infer<typeof portForwardCreate>;
export type SettingsUpdate = z.infer<typeof settingsUpdate>;
export type TokenCreate = z.infer<typeof tokenCreate>;

/** The scheduled reconcile's reason: a sync with it only acts when something is pending. */
export const SCHEDULED_SYNC_REASON = 'scheduled';

/**
 * `reason` is for logs only. A sync reconciles everything, except the scheduled one
 * (reason SCHEDULED_SYNC_REASON, src/jobs/broker-requests.ts), which returns at once when
 * nothing is pending.
 */
export const brokerSync = z.strictObject({
  reason: z.string().min(1, { error: 'must not be empty' }).max(200, { error: 'is longer than 200 characters' }).optional(),
});
export type BrokerSync = z.infer<typeof brokerSync>;

/** Export takes nothing: what to export is everything, and the key is the administrator's. */
export const snapshotExport = z.strictObject({});

/**
 * Only the id of an upload the API already decrypted and validated, and staged with its
 * data key sealed under the server key: the password never reaches Redis.
 */
export const snapshotRestore = z.strictObject({ stagedId: uuid() });

export type SnapshotExport = z.infer<typeof snapshotExport>;
export type SnapshotRestore = z.infer<typeof snapshotRestore>;

/** Pushes the node's desired configuration to its agent over MQTT (dynamic nodes only). */
export const nodePushConfig = z.strictObject({
  nodeId: uuid(),
  /**
   * Publish the current revision again even though its content did not change, if the
   * agent has not acknowledged it (meshq asks when a lagging node comes online).
   */
  resend: z.boolean().optional(),
});
export type NodePushConfig = z.infer<typeof nodePushConfig>;

/** A batch of config pushes takes nothing: it serves the push requests the database holds. */
export const nodePushConfigs = z.strictObject({});
export type NodePushConfigs = z.infer<typeof nodePushConfigs>;

/** Retention takes nothing: every age is a rule of the processor or the configuration. */
export const retentionPrune = z.strictObject({});
export type RetentionPrune = z.infer<typeof retentionPrune>;

/**
 * Every job type and its payload schema. The job table (table.ts) holds each type's other
 * rules; the names and payload types live here, below the processors, so that the job
 * context (ctx.enqueue) can be typed by job type without importing the table.
 */
export const PAYLOADS = {
  'config.create': configCreate,
  'config.update': configUpdate,
  'config.delete': byId,
  'node.create': nodeCreate,
  'node.update': nodeUpdate,
  'node.delete': byId,
  'node.rotate-credentials': nodeRotateCredentials,
  'node.rotate-keys': byId,
  'node.presence': nodePresence,
  'mesh.generate': meshGenerate,
  'link.create': linkCreate,
  'link.delete': byId,
  'port-forward.create': portForwardCreate,
  'port-forward.delete': byId,
  'settings.update': settingsUpdate,
  'token.create': tokenCreate,
  'token.revoke': byId,
  'broker.sync': brokerSync,
  'snapshot.export': snapshotExport,
  'snapshot.restore': snapshotRestore,
  'node.push-config': nodePushConfig,
  'node.push-configs': nodePushConfigs,
  'retention.prune': retentionPrune,
} as const;

export type JobType = keyof typeof PAYLOADS;
/** A payload as a processor sees it: parsed, defaults filled in. */
export type JobPayload<T extends JobType> = z.output<(typeof PAYLOADS)[T]>;
/** A payload as a submitter writes it: fields with defaults may be left out. */
export type JobInput<T extends JobType> = z.input<(typeof PAYLOADS)[T]>;
