/**
 * How a broker sync gets asked for, and how often it is retried.
 *
 * Coalescing: every request is added with the same BullMQ deduplication id, so any
 * number of requests collapse into one pending job. `keepLastIfActive` covers the case a
 * plain deduplication drops: a request that arrives while a sync is ACTIVE (that sync
 * may already have read the database) is kept, and BullMQ creates exactly one new job
 * when the active one finishes. So there is at most one running and one waiting sync,
 * and no change is ever left waiting for the scheduled reconcile unless a request is
 * lost outright (a crash between commit and request), which the pending mark in the
 * database and the scheduled reconcile cover.
 */
import type { BackoffStrategy, Job, JobsOptions } from 'bullmq';
import { v7 as uuidv7 } from 'uuid';
import type { Config } from '../config.js';
import { brokerSync } from './payloads.js';
import type { JobQueues } from './queue-client.js';
import { QUEUES } from './names.js';
import type { JobEnvelope } from './runner.js';

export const BROKER_SYNC_JOB = 'broker.sync';
export const BROKER_SYNC_DEDUP_ID = 'broker-sync';
export const BROKER_RECONCILE_SCHEDULER_ID = 'broker-reconcile';
/** The scheduled reconcile's reason: it only acts when something is pending. */
export const SCHEDULED_SYNC_REASON = 'scheduled';
export const DEFAULT_RECONCILE_EVERY_MS = 60_000;

/** A backoff type of our own: BullMQ's `exponential` has no cap. */
export const BROKER_BACKOFF_TYPE = 'broker-capped-exponential';
export const BROKER_BACKOFF_BASE_MS = 1_000;
export const BROKER_BACKOFF_CAP_MS = 60_000;
/** About 45 minutes of retries at the cap; the scheduled reconcile carries on after that. */
export const BROKER_SYNC_ATTEMPTS = 50;

/**
 * min(cap, base * 2^(attempt-1)), with up to 20% taken off at random so that several
 * workers that lost EMQX together do not come back in lockstep.
 */
export function brokerBackoffDelay(attemptsMade: number, baseMs = BROKER_BACKOFF_BASE_MS, capMs = BROKER_BACKOFF_CAP_MS, random = Math.random): number {
  const full = Math.min(capMs, baseMs * 2 ** Math.max(0, attemptsMade - 1));
  return Math.round(full * (1 - 0.2 * random()));
}

/** Installed on the workers (`settings.backoffStrategy`); BullMQ calls it for non-builtin types only. */
export const brokerBackoffStrategy: BackoffStrategy = (attemptsMade, type, _err, job) => {
  if (type !== BROKER_BACKOFF_TYPE) throw new Error(`unknown backoff type "${type}"`);
  const base = (job?.opts.backoff as { delay?: number } | undefined)?.delay ?? BROKER_BACKOFF_BASE_MS;
  return brokerBackoffDelay(attemptsMade, base);
};

const RETRY_OPTIONS: Pick<JobsOptions, 'attempts' | 'backoff'> = {
  attempts: BROKER_SYNC_ATTEMPTS,
  backoff: { type: BROKER_BACKOFF_TYPE, delay: BROKER_BACKOFF_BASE_MS },
};

/**
 * Asks for a full sync. Returns the job that will do it: a new one, the one already
 * waiting (the request coalesced into it), or the active one (the request is kept and
 * runs when it finishes). Callers check MQTT_ENABLED: with MQTT disabled nothing may
 * ever be enqueued for EMQX.
 */
export async function requestBrokerSync(queues: JobQueues, reason: string, actor = 'system'): Promise<Job> {
  const envelope: JobEnvelope = { actor, payload: brokerSync.parse({ reason: reason.slice(0, 200) }) };
  const queue = queues.queue(QUEUES.brokerSync);
  const added = await queue.add(BROKER_SYNC_JOB, envelope, {
    ...RETRY_OPTIONS,
    // Job ids are ledger keys: unique forever, like every other job's.
    jobId: uuidv7(),
    deduplication: { id: BROKER_SYNC_DEDUP_ID, keepLastIfActive: true },
  });
  // Deduplicated: BullMQ hands back a local object carrying the existing job's id.
  return (await queue.getJob(added.id!)) ?? added;
}

/**
 * Registers (MQTT enabled) or removes (disabled) the scheduled reconcile. Every worker
 * process does this at start; an upsert with the same id is one scheduler, however many
 * workers there are. A scheduled run does nothing unless something is pending, so
 * `everyMs` bounds how long a lost request can delay a sync.
 */
export async function configureScheduledReconcile(
  queues: JobQueues,
  config: Pick<Config, 'mqtt'>,
  everyMs = DEFAULT_RECONCILE_EVERY_MS,
): Promise<void> {
  const queue = queues.queue(QUEUES.brokerSync);
  if (!config.mqtt.enabled) {
    await queue.removeJobScheduler(BROKER_RECONCILE_SCHEDULER_ID);
    return;
  }
  const envelope: JobEnvelope = { actor: 'system', payload: { reason: SCHEDULED_SYNC_REASON } };
  await queue.upsertJobScheduler(
    BROKER_RECONCILE_SCHEDULER_ID,
    { every: everyMs },
    {
      name: BROKER_SYNC_JOB,
      data: envelope,
      // No retries: the next tick is the retry.
      opts: { attempts: 1, removeOnComplete: { count: 100 }, removeOnFail: { count: 1_000, age: 7 * 24 * 3600 } },
    },
  );
}
