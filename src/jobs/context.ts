import type { Job } from 'bullmq';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Em } from '../db/orm.js';
import type { Repositories } from '../repositories/index.js';
import type { MqttPublisher } from '../broker/mqtt-link.js';
import type { JobInput, JobType } from './payloads.js';

/**
 * What a processor gets. A processor is a plain async function `(data, ctx) => result`:
 * it never flushes and never opens a transaction; the runner wraps it in one unit of
 * work and commits repository writes, the audit record and the job ledger together.
 */
export interface JobContext {
  /** Forked EntityManager, inside the job's transaction. */
  readonly em: Em;
  readonly repos: Repositories;
  readonly log: Logger;
  readonly config: Config;
  /** Who submitted the job (admin name or `token:<id>`), for the audit record. */
  readonly actor: string;
  readonly jobId: string;
  readonly job?: Job;
  /** Runs after the transaction committed (follow-up jobs); never on rollback. */
  afterCommit(fn: () => Promise<unknown>): void;
  /** Enqueues a follow-up job once the transaction committed (never on rollback). */
  enqueue<T extends JobType>(type: T, payload: JobInput<T>, opts?: { jobId?: string }): void;
  /** The worker process's MQTT link; absent when MQTT is disabled. */
  readonly mqtt?: MqttPublisher;
  /** Reports progress (0-100) on the job; outside the transaction. */
  progress(percent: number): Promise<void>;
}

export type Processor<D, R> = (data: D, ctx: JobContext) => Promise<R>;
