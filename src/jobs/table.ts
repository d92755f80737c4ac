/**
 * THE job table: every rule of every job type, in its row. Nothing outside this module
 * decides per job type; the queue client, the runner, the worker and the API read rows.
 *
 * A type without a row (or a row without a processor) does not compile. The worker starts
 * one BullMQ worker for every queue named here, so no queue is left without one. How each
 * queue runs (concurrency, global serialization) sits with the queue names (names.ts);
 * each type's payload schema with the payloads (payloads.ts PAYLOADS), copied into its row
 * here.
 */
import type { BackoffStrategy, JobsOptions } from 'bullmq';
import type { z } from 'zod';
import { backoffDelay } from '../backoff.js';
import type { Scope } from '../domain/scopes.js';
import { NotFoundError } from '../domain/errors.js';
import type { Repositories } from '../repositories/index.js';
import type { Processor } from './context.js';
import { QUEUES, type QueueName } from './names.js';
import { PAYLOADS, type JobInput, type JobPayload, type JobType } from './payloads.js';
import { requireConfigNameFree, requireNode, requireNodePairInConfig, type CheckContext } from './prechecks.js';
import * as configs from './processors/configs.js';
import * as nodes from './processors/nodes.js';
import * as mesh from './processors/mesh.js';
import * as links from './processors/links.js';
import * as forwards from './processors/port-forwards.js';
import * as settings from './processors/settings.js';
import * as tokens from './processors/tokens.js';
import * as broker from './processors/broker.js';
import * as pushes from './processors/push-config.js';
import * as snapshots from './processors/snapshots.js';
import * as retention from './processors/retention.js';
import { PUSH_BATCH_DEDUPLICATION_ID, pushDeduplicationId } from './pushes.js';

export type { JobInput, JobPayload, JobType };

/**
 * How long a job keeps retrying infrastructure errors, and how long it waits between runs
 * (src/backoff.ts). Without `attempts` a job retries for a window of time
 * (JOB_RETRY_WINDOW_MS, counted from its first failure) with the backoff capped at
 * JOB_RETRY_MAX_DELAY_MS: an outage of the database or Redis shorter than the window
 * costs accepted jobs nothing. Domain errors never retry.
 */
export interface Retry {
  /** A fixed number of runs instead of the window. */
  readonly attempts?: number;
  readonly backoff: { readonly baseMs: number; readonly capMs: number };
}

/** Most jobs: quick retries at first, then one a minute for the whole window. */
export const DEFAULT_RETRY: Retry = { backoff: { baseMs: 500, capMs: 60_000 } };

/** The window when the configuration names none (JOB_RETRY_WINDOW_MS's default). */
export const DEFAULT_RETRY_WINDOW_MS = 3_600_000;

/** What the configuration says about retries (config.ts): the window and the backoff cap. */
export interface RetryLimits {
  readonly windowMs?: number;
  readonly capMs?: number;
}

/**
 * Runs enough for the retry window: the fewest whose waits add up to the window even
 * when every wait is shortened by the backoff's full jitter. BullMQ counts attempts, not
 * time, and a count fixed when the job is added survives every worker restart.
 */
export function attemptsFor(retry: Retry, limits: RetryLimits = {}): number {
  if (retry.attempts !== undefined) return retry.attempts;
  const windowMs = limits.windowMs ?? DEFAULT_RETRY_WINDOW_MS;
  const capMs = Math.min(retry.backoff.capMs, limits.capMs ?? retry.backoff.capMs);
  // Every submission asks: the walk below is done once per distinct setting.
  const memoKey = `${retry.backoff.baseMs}:${capMs}:${windowMs}`;
  const known = attemptsMemo.get(memoKey);
  if (known !== undefined) return known;
  const attempts = windowAttempts(retry, windowMs, capMs);
  attemptsMemo.set(memoKey, attempts);
  return attempts;
}

const attemptsMemo = new Map<string, number>();

function windowAttempts(retry: Retry, windowMs: number, capMs: number): number {
  let waited = 0;
  let retries = 0;
  while (waited < windowMs) {
    retries++;
    waited += backoffDelay(retries, { baseMs: Math.min(retry.backoff.baseMs, capMs), capMs, random: () => 1 - Number.EPSILON });
  }
  return retries + 1;
}

export interface JobDefinition<T extends JobType> {
  /** The token scope a caller needs to submit it (POST /api/v1/jobs, or its own endpoint). */
  readonly scope: Scope;
  readonly queue: QueueName;
  readonly schema: (typeof PAYLOADS)[T];
  readonly processor: Processor<JobPayload<T>, unknown>;
  /**
   * The API's semantic check before enqueueing (see prechecks.ts): a 404 or 409 at once
   * for the obvious mistakes. A courtesy; the job checks again in its transaction.
   */
  readonly precheck?: (data: JobPayload<T>, ctx: CheckContext) => Promise<void>;
  /** Runs holding the data lock exclusively: no other write runs meanwhile (its queue is globally serial). */
  readonly exclusive?: boolean;
  readonly retry: Retry;
  /**
   * BullMQ deduplication: any number of submissions collapse into one pending job;
   * `keepLastIfActive` keeps one submitted while a job is active, to run after it.
   */
  readonly deduplication?: {
    /** One id for the type, or one per payload (a node's pushes coalesce per node). */
    readonly id: string | ((data: JobPayload<T>) => string);
    readonly keepLastIfActive: boolean;
  };
  /**
   * Submitted only by meshq itself, never through POST /api/v1/jobs: `endpoint` names
   * the endpoint a client asks through (it makes the secret, or the hash the job carries).
   */
  readonly internal?: { readonly endpoint?: string };
  readonly description: string;
  /**
   * Runs after a failed attempt's transaction rolled back, in a small transaction of its
   * own, to record the failure where the job's own writes could not (broker.sync's
   * lastError). Its own failure is logged, never thrown.
   */
  readonly onFailure?: (err: unknown, repos: Repositories) => Promise<void>;
}

type Row<T extends JobType> = Omit<JobDefinition<T>, 'schema' | 'retry'> & { readonly retry?: Retry };

const operation = { scope: 'operate', queue: QUEUES.operations } as const;

const ROWS: { readonly [T in JobType]: Row<T> } = {
  'config.create': {
    ...operation,
    processor: configs.createConfig,
    precheck: async (d, ctx) => requireConfigNameFree(ctx.repos(), d.name),
    description: 'Create a mesh config',
  },
  'config.update': {
    ...operation,
    processor: configs.updateConfig,
    precheck: async (d, ctx) => {
      const repos = ctx.repos();
      await repos.configs.require(d.id);
      if (d.name !== undefined) await requireConfigNameFree(repos, d.name, d.id);
    },
    description: 'Update a mesh config (not its subnet)',
  },
  'config.delete': {
    ...operation,
    processor: configs.deleteConfig,
    precheck: async (d, ctx) => void (await ctx.repos().configs.require(d.id)),
    description: 'Delete a config and everything in it',
  },
  'node.create': {
    ...operation,
    processor: nodes.createNode,
    precheck: async (d, ctx) => void (await ctx.repos().configs.require(d.configId)),
    description: 'Create a node; its address is allocated when not given',
  },
  'node.update': {
    ...operation,
    processor: nodes.updateNode,
    precheck: async (d, ctx) => requireNode(ctx, d.id),
    description: 'Rename a node or change its endpoint or listen port',
  },
  'node.delete': {
    ...operation,
    processor: nodes.deleteNode,
    precheck: async (d, ctx) => requireNode(ctx, d.id),
    description: 'Delete a node with its links, rules and credential',
  },
  'node.rotate-credentials': {
    scope: 'credentials',
    queue: QUEUES.operations,
    processor: nodes.rotateCredentials,
    internal: { endpoint: 'POST /api/v1/nodes/{id}/credentials' },
    description: 'Store a new MQTT credential hash (POST /api/v1/nodes/:id/credentials)',
  },
  'node.rotate-keys': {
    // It makes a new private key, which the node's wireguard.conf and pushes then reveal.
    scope: 'credentials',
    queue: QUEUES.operations,
    processor: nodes.rotateKeys,
    precheck: async (d, ctx) => requireNode(ctx, d.id),
    description: 'Give a node whose key meshq holds a new WireGuard key pair; its peers get the new public key',
  },
  'node.presence': {
    scope: 'admin',
    queue: QUEUES.operations,
    processor: nodes.recordPresence,
    internal: {},
    description: 'Record a node going online or offline',
  },
  'mesh.generate': {
    ...operation,
    processor: mesh.generateMesh,
    precheck: async (d, ctx) => void (await ctx.repos().configs.require(d.configId)),
    description: 'Create every missing peer pair of a config',
  },
  'link.create': {
    ...operation,
    processor: links.createLink,
    precheck: async (d, ctx) => requireNodePairInConfig(ctx.repos(), d.configId, d.fromNodeId, d.toNodeId),
    description: 'Create one peer pair between two nodes of a config (both directions)',
  },
  'link.delete': {
    ...operation,
    processor: links.deleteLink,
    precheck: async (d, ctx) => {
      if (!(await ctx.repos().links.get(d.id))) throw new NotFoundError('link', d.id);
    },
    description: 'Delete a peer pair, named by either direction',
  },
  'port-forward.create': {
    ...operation,
    processor: forwards.createPortForward,
    precheck: async (d, ctx) => requireNodePairInConfig(ctx.repos(), d.configId, d.fromNodeId, d.toNodeId),
    description: 'Create a port-forward rule',
  },
  'port-forward.delete': {
    ...operation,
    processor: forwards.deletePortForward,
    precheck: async (d, ctx) => void (await ctx.repos().forwards.require(d.id)),
    description: 'Delete a port-forward rule',
  },
  'settings.update': {
    ...operation,
    processor: settings.updateSettings,
    description: 'Set settings (key -> JSON value)',
  },
  'token.create': {
    scope: 'admin',
    queue: QUEUES.operations,
    processor: tokens.createToken,
    internal: { endpoint: 'POST /api/v1/tokens' },
    description: 'Store a new API token hash (POST /api/v1/tokens)',
  },
  'token.revoke': {
    scope: 'admin',
    queue: QUEUES.operations,
    processor: tokens.revokeToken,
    precheck: async (d, ctx) => {
      if (!(await ctx.repos().tokens.exists(d.id))) throw new NotFoundError('API token', d.id);
    },
    description: 'Revoke an API token',
  },
  'broker.sync': {
    scope: 'operate',
    queue: QUEUES.brokerSync,
    processor: broker.syncBroker,
    onFailure: broker.recordSyncFailure,
    // About 45 minutes of retries at the cap; the scheduled reconcile carries on after that.
    retry: { attempts: 50, backoff: { baseMs: 1_000, capMs: 60_000 } },
    // At most one running and one waiting sync: a request while one is waiting joins it;
    // one while a sync is ACTIVE (it may already have read the database) is kept and runs
    // after it, so no change waits for the scheduled reconcile unless a request is lost
    // outright (a crash between commit and request), which the pending mark covers.
    deduplication: { id: 'broker-sync', keepLastIfActive: true },
    internal: { endpoint: 'POST /api/v1/broker/sync' },
    description: 'Reconcile EMQX users and rules with the database (POST /api/v1/broker/sync; requested after credential changes)',
  },
  'snapshot.export': {
    scope: 'snapshots',
    queue: QUEUES.snapshots,
    processor: snapshots.exportSnapshot,
    description: 'Export every business row into an encrypted snapshot stored in the database (GET /api/v1/snapshots)',
  },
  'snapshot.restore': {
    scope: 'snapshots',
    queue: QUEUES.snapshotRestore,
    processor: snapshots.restoreSnapshot,
    exclusive: true,
    internal: { endpoint: 'POST /api/v1/snapshots/restore' },
    description: 'Replace every business row with a staged upload (POST /api/v1/snapshots/restore)',
  },
  'node.push-config': {
    scope: 'credentials',
    queue: QUEUES.brokerSync,
    processor: pushes.pushConfig,
    // At-least-once: a push the broker did not take retries, re-reading the node's state
    // each time (so a retry carries the newest revision), for about a week at the cap.
    retry: { attempts: 10_000, backoff: { baseMs: 1_000, capMs: 60_000 } },
    // Per node: requests while a push waits join it; one made while it runs is kept and
    // runs after it (it may have read the state before the change that asked).
    deduplication: { id: (d) => pushDeduplicationId(d.nodeId), keepLastIfActive: true },
    description: "Publish a dynamic node's desired configuration (address, peers) to its agent over MQTT",
  },
  'node.push-configs': {
    scope: 'credentials',
    queue: QUEUES.brokerSync,
    processor: pushes.pushConfigs,
    // At-least-once: a batch the broker did not take rolls back (its requests stay) and
    // retries, re-reading the newest state each time, for about a week at the cap.
    retry: { attempts: 10_000, backoff: { baseMs: 1_000, capMs: 60_000 } },
    // One waiting batch at most, and one kept while a batch runs (the requests it may have
    // missed wait in the database for it).
    deduplication: { id: PUSH_BATCH_DEDUPLICATION_ID, keepLastIfActive: true },
    internal: {},
    description: 'Publish the configurations of the dynamic nodes whose pushes were requested (after every change that alters what an agent runs)',
  },
  'retention.prune': {
    scope: 'admin',
    queue: QUEUES.operations,
    processor: retention.pruneRetention,
    description: "Prune the ledger and idempotency keys past the jobs' retention, staged uploads past their lifetime, audit records past AUDIT_RETENTION_DAYS (scheduled daily)",
  },
};

export const JOB_TYPES = Object.keys(ROWS) as JobType[];

export const JOBS = Object.fromEntries(
  JOB_TYPES.map((type) => [type, { retry: DEFAULT_RETRY, ...ROWS[type], schema: PAYLOADS[type] }]),
) as unknown as { readonly [T in JobType]: JobDefinition<T> };

export const isJobType = (t: unknown): t is JobType => typeof t === 'string' && Object.hasOwn(JOBS, t);

/** A row seen through a type known only at run time (the runner, the API, the queue client). */
export interface AnyJobDefinition extends Omit<JobDefinition<JobType>, 'schema' | 'processor' | 'precheck'> {
  readonly schema: z.ZodType;
  readonly processor: Processor<unknown, unknown>;
  readonly precheck?: (data: unknown, ctx: CheckContext) => Promise<void>;
}

export function jobDefinition(type: JobType): AnyJobDefinition {
  return JOBS[type] as unknown as AnyJobDefinition;
}

/** Job types a client may submit through POST /api/v1/jobs. */
export const PUBLIC_JOB_TYPES = JOB_TYPES.filter((t) => !JOBS[t].internal);

export const queueOf = (type: JobType): QueueName => JOBS[type].queue;

/**
 * The one backoff type jobs are added with. BullMQ hands every non-builtin type to the
 * workers' strategy (below), which reads the job's row: its builtin `exponential` has no cap.
 */
export const RETRY_BACKOFF_TYPE = 'meshq-capped-exponential';

/**
 * The wait before retry number `attemptsMade` of a job of `type` (an unknown type gets
 * the default), its cap lowered to `capMs` when the configuration says so.
 */
export function retryDelay(type: string, attemptsMade: number, random?: () => number, capMs?: number): number {
  const { backoff } = isJobType(type) ? JOBS[type].retry : DEFAULT_RETRY;
  const cap = Math.min(backoff.capMs, capMs ?? backoff.capMs);
  return backoffDelay(attemptsMade, { baseMs: Math.min(backoff.baseMs, cap), capMs: cap, ...(random ? { random } : {}) });
}

/** Installed on the workers (`settings.backoffStrategy`), with the configured cap (JOB_RETRY_MAX_DELAY_MS). */
export const retryStrategyFor =
  (capMs?: number): BackoffStrategy =>
  (attemptsMade, _type, _err, job) =>
    retryDelay(job?.name ?? '', attemptsMade, undefined, capMs);

/** The strategy with the rows' own caps. */
export const retryStrategy: BackoffStrategy = retryStrategyFor();

/**
 * The BullMQ options a job of `type` is added with: its retries and deduplication (a
 * per-payload deduplication id needs the payload).
 */
export function jobOptions(type: JobType, payload?: unknown, limits?: RetryLimits): JobsOptions {
  const def = jobDefinition(type);
  const dedup = def.deduplication;
  const id = typeof dedup?.id === 'function' ? (payload === undefined ? undefined : (dedup.id as (d: unknown) => string)(payload)) : dedup?.id;
  return {
    attempts: attemptsFor(def.retry, limits),
    backoff: { type: RETRY_BACKOFF_TYPE, delay: def.retry.backoff.baseMs },
    ...(dedup && id !== undefined ? { deduplication: { id, keepLastIfActive: dedup.keepLastIfActive } } : {}),
  };
}
