/**
 * THE job table: every job type, its queue, its payload schema and its processor.
 * A type without a processor does not compile, and the worker starts one BullMQ worker
 * for every queue named here, so no queue can be left without one.
 */
import type { z } from 'zod';
import { QUEUES, type QueueName } from './names.js';
import * as payloads from './payloads.js';
import * as configs from './processors/configs.js';
import * as nodes from './processors/nodes.js';
import * as mesh from './processors/mesh.js';
import * as forwards from './processors/port-forwards.js';
import * as settings from './processors/settings.js';
import * as tokens from './processors/tokens.js';
import * as broker from './processors/broker.js';
import * as pushes from './processors/push-config.js';
import * as snapshots from './processors/snapshots.js';
import type { Processor } from './context.js';
import type { Repositories } from '../repositories/index.js';
import type { Scope } from '../domain/scopes.js';

export interface JobDefinition<S extends z.ZodType, R> {
  /** The token scope a caller needs to submit it (POST /api/v1/jobs or its own endpoint). */
  readonly scope: Scope;
  readonly queue: QueueName;
  readonly schema: S;
  readonly processor: Processor<z.infer<S>, R>;
  /** Submitted only by their own endpoints (they carry a hash made by the API). */
  readonly internal?: boolean;
  readonly description: string;
  /**
   * Runs after a failed attempt's transaction rolled back, in a small transaction of its
   * own, to record the failure where the job's own writes could not (broker.sync's
   * lastError). Its own failure is logged, never thrown.
   */
  readonly onFailure?: (err: unknown, repos: Repositories) => Promise<void>;
}

const job = <S extends z.ZodType, R>(d: JobDefinition<S, R>) => d;

export const JOBS = {
  'config.create': job({ scope: 'operate', queue: QUEUES.operations, schema: payloads.configCreate, processor: configs.createConfig, description: 'Create a mesh config' }),
  'config.update': job({ scope: 'operate', queue: QUEUES.operations, schema: payloads.configUpdate, processor: configs.updateConfig, description: 'Update a mesh config (not its subnet)' }),
  'config.delete': job({ scope: 'operate', queue: QUEUES.operations, schema: payloads.byId, processor: configs.deleteConfig, description: 'Delete a config and everything in it' }),
  'node.create': job({ scope: 'operate', queue: QUEUES.operations, schema: payloads.nodeCreate, processor: nodes.createNode, description: 'Create a node; its address is allocated when not given' }),
  'node.update': job({ scope: 'operate', queue: QUEUES.operations, schema: payloads.nodeUpdate, processor: nodes.updateNode, description: 'Rename a node or change its endpoint or listen port' }),
  'node.delete': job({ scope: 'operate', queue: QUEUES.operations, schema: payloads.byId, processor: nodes.deleteNode, description: 'Delete a node with its links, rules and credential' }),
  'node.rotate-credentials': job({ scope: 'credentials', queue: QUEUES.operations, schema: payloads.nodeRotateCredentials, processor: nodes.rotateCredentials, internal: true, description: 'Store a new MQTT credential hash (POST /api/v1/nodes/:id/credentials)' }),
  'node.presence': job({ scope: 'admin', queue: QUEUES.operations, schema: payloads.nodePresence, processor: nodes.recordPresence, internal: true, description: 'Record a node going online or offline' }),
  'mesh.generate': job({ scope: 'operate', queue: QUEUES.operations, schema: payloads.meshGenerate, processor: mesh.generateMesh, description: 'Create every missing peer pair of a config' }),
  'port-forward.create': job({ scope: 'operate', queue: QUEUES.operations, schema: payloads.portForwardCreate, processor: forwards.createPortForward, description: 'Create a port-forward rule' }),
  'port-forward.delete': job({ scope: 'operate', queue: QUEUES.operations, schema: payloads.byId, processor: forwards.deletePortForward, description: 'Delete a port-forward rule' }),
  'settings.update': job({ scope: 'operate', queue: QUEUES.operations, schema: payloads.settingsUpdate, processor: settings.updateSettings, description: 'Set settings (key -> JSON value)' }),
  'token.create': job({ scope: 'admin', queue: QUEUES.operations, schema: payloads.tokenCreate, processor: tokens.createToken, internal: true, description: 'Store a new API token hash (POST /api/v1/tokens)' }),
  'token.revoke': job({ scope: 'admin', queue: QUEUES.operations, schema: payloads.byId, processor: tokens.revokeToken, description: 'Revoke an API token' }),
  'broker.sync': job({ scope: 'operate', queue: QUEUES.brokerSync, schema: payloads.brokerSync, processor: broker.syncBroker, onFailure: broker.recordSyncFailure, internal: true, description: 'Reconcile EMQX users and rules with the database (POST /api/v1/broker/sync; requested after credential changes)' }),
  'snapshot.export': job({ scope: 'snapshots', queue: QUEUES.snapshots, schema: payloads.snapshotExport, processor: snapshots.exportSnapshot, description: 'Export every business row into an encrypted snapshot stored in the database (GET /api/v1/snapshots)' }),
  'snapshot.restore': job({ scope: 'snapshots', queue: QUEUES.snapshotRestore, schema: payloads.snapshotRestore, processor: snapshots.restoreSnapshot, internal: true, description: 'Replace every business row with a staged upload (POST /api/v1/snapshots/restore)' }),
  'node.push-config': job({ scope: 'credentials', queue: QUEUES.brokerSync, schema: payloads.nodePushConfig, processor: pushes.pushConfig, description: 'Publish a dynamic node\'s desired configuration (address, peers) to its agent over MQTT' }),
} as const;

export type JobType = keyof typeof JOBS;
export type JobPayload<T extends JobType> = z.infer<(typeof JOBS)[T]['schema']>;
export const JOB_TYPES = Object.keys(JOBS) as JobType[];

export const isJobType = (t: unknown): t is JobType => typeof t === 'string' && Object.hasOwn(JOBS, t);

export function jobDefinition(type: JobType): JobDefinition<z.ZodType, unknown> {
  return JOBS[type] as unknown as JobDefinition<z.ZodType, unknown>;
}

/** Job types a client may submit through POST /api/v1/jobs. */
export const PUBLIC_JOB_TYPES = JOB_TYPES.filter((t) => !jobDefinition(t).internal);

export const queueOf = (type: JobType): QueueName => JOBS[type].queue;
