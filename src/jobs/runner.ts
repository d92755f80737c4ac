/**
 * The unit-of-work runner: the one place where a job becomes a transaction.
 *
 *   validate payload -> [transaction: processor -> flush -> ledger and audit rows, commit]
 *   -> after-commit work (follow-up jobs)
 *
 * Recording the ledger row in the same transaction as the effects is what makes a re-run
 * after a crash between commit and acknowledgement harmless: its ledger insert collides
 * with the committed row, nothing of the re-run commits, and the recorded result is
 * returned.
 */
import type { Job } from 'bullmq';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { UnitOfWork } from '../db/unit-of-work.js';
import { InvalidError } from '../domain/errors.js';
import { createRepositories, type Repositories } from '../repositories/index.js';
import type { MqttPublisher } from '../broker/mqtt-link.js';
import type { JobContext } from './context.js';
import { permanentFailure, toDomainError } from './errors.js';
import { jobDefinition, type JobInput, type JobType } from './table.js';
import { compactIssues, describeZodError } from '../domain/zod-errors.js';
import type { JobEnvelope } from './envelope.js';
import type { CommittedJob } from './events.js';

export interface RunnerDeps {
  uow: UnitOfWork;
  config: Config;
  log: Logger;
  serverKey: Buffer;
  /** Enqueues a follow-up job (after commit). */
  enqueue<T extends JobType>(type: T, payload: JobInput<T>, opts?: { jobId?: string; actor?: string }): Promise<unknown>;
  /** Test seam: called right after commit, before acknowledgement. */
  onCommitted?(jobId: string, type: JobType): void;
  /** The worker process's MQTT link (config pushes); absent when MQTT is disabled. */
  mqtt?: MqttPublisher;
  /**
   * Requests a coalesced broker sync (src/jobs/broker-requests.ts). Called after commit when
   * the job's unit of work asked for one (it marked credentials changed, or it is a sync
   * that saw changes arrive) and MQTT is enabled; absent, nothing is requested.
   */
  requestBrokerSync?(reason: string): Promise<unknown>;
  /** Publishes a committed job's domain event (src/jobs/events.ts); absent, none is published. */
  publishCommitted?(job: CommittedJob): Promise<unknown>;
}

export interface RunInput {
  jobId: string;
  type: JobType;
  /** Who asked and the payload; the worker verified the envelope's signature already. */
  envelope: Pick<JobEnvelope, 'actor' | 'payload'>;
  job?: Job;
}

export async function runJob(deps: RunnerDeps, input: RunInput): Promise<unknown> {
  const def = jobDefinition(input.type);
  const parsed = def.schema.safeParse(input.envelope.payload);
  if (!parsed.success) {
    throw permanentFailure(new InvalidError(describeZodError(parsed.error, input.type), compactIssues(parsed.error.issues)));
  }
  // Made on first use: most jobs log nothing, and a child logger per job showed in profiles.
  let childLog: Logger | undefined;
  const jobLog = () => (childLog ??= deps.log.child({ jobId: input.jobId, type: input.type }));
  const afterCommit: (() => Promise<unknown>)[] = [];

  let result: unknown;
  let repos: Repositories | undefined;
  try {
    result = await deps.uow.write(
      async (em, tx) => {
        afterCommit.length = 0; // a retried transaction starts over
        repos = createRepositories(em, { serverKey: deps.serverKey, tx });
        const ctx: JobContext = {
          em,
          repos,
          get log() {
            return jobLog();
          },
          config: deps.config,
          actor: input.envelope.actor,
          jobId: input.jobId,
          job: input.job,
          mqtt: deps.mqtt,
          afterCommit: (fn) => afterCommit.push(fn),
          enqueue: (type, payload, opts) => afterCommit.push(() => deps.enqueue(type, payload, { ...opts, actor: input.envelope.actor })),
          progress: async (p) => {
            await input.job?.updateProgress(p);
          },
        };
        const value = await def.processor(parsed.data, ctx);
        // The ledger row's primary key is the job id: if this job already committed
        // once, this insert fails and the whole transaction rolls back (below).
        tx.closeWith({ jobId: input.jobId, type: input.type, result: value, audit: repos.audit.takePending() });
        return value;
      },
      { exclusive: def.exclusive ?? false },
    );
  } catch (err) {
    // Checked only on failure, to keep a query off every job's hot path: a re-run of a
    // job that already committed fails (its ledger insert collides, or the processor
    // trips over its own earlier effect, e.g. "name taken") and is answered here.
    const recorded = await deps.uow.readLedger(input.jobId).catch(() => undefined);
    if (recorded) {
      jobLog().info('job already applied; returning the recorded result');
      return recorded.result;
    }
    // The job's own writes rolled back; a job that must leave a trace of its failure
    // (broker.sync's lastError) writes it in a small transaction of its own.
    if (def.onFailure) {
      const onFailure = def.onFailure;
      await deps.uow
        .write((em) => onFailure(err, createRepositories(em, { serverKey: deps.serverKey })))
        .catch((e: unknown) => jobLog().error({ err: e }, 'recording the failure failed'));
    }
    const domain = toDomainError(err);
    if (domain) {
      jobLog().info({ code: domain.code, err: domain.message }, 'job failed permanently');
      throw permanentFailure(domain);
    }
    jobLog().warn({ err }, 'job failed; will retry');
    throw err;
  }

  deps.onCommitted?.(input.jobId, input.type);
  if (deps.publishCommitted) {
    const committed = { jobId: input.jobId, type: input.type, actor: input.envelope.actor, payload: parsed.data, result };
    await deps.publishCommitted(committed).catch((err: unknown) => jobLog().warn({ err }, 'publishing the event failed'));
  }
  for (const fn of afterCommit) {
    // The commit stands whatever happens here; a lost follow-up is picked up by the
    // scheduled reconcile (broker sync), so a failure is logged, not thrown.
    await fn().catch((err: unknown) => jobLog().error({ err }, 'after-commit step failed'));
  }
  // Generic, so no processor needs the queues: a unit of work that marked the broker sync
  // pending gets a coalesced sync requested now. With MQTT disabled the mark stays
  // recorded and nothing is enqueued.
  const syncReason = repos?.system.brokerSyncRequest;
  if (syncReason && deps.config.mqtt.enabled && deps.requestBrokerSync) {
    await deps.requestBrokerSync(syncReason).catch((err: unknown) => jobLog().error({ err }, 'requesting a broker sync failed'));
  }
  return result;
}
