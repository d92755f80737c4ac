/**
 * How a broker sync gets asked for, on demand and on a schedule. Its retries and its
 * coalescing (deduplication) are rules of its row in the job table.
 */
import type { Job } from 'bullmq';
import type { Config } from '../config.js';
import { SCHEDULED_SYNC_REASON } from './payloads.js';
import type { JobQueues } from './queue-client.js';
import { JOBS } from './table.js';

export const BROKER_RECONCILE_SCHEDULER_ID = 'broker-reconcile';
export const DEFAULT_RECONCILE_EVERY_MS = 60_000;

/**
 * Asks for a full sync. Returns the job that will do it: a new one, the one already
 * waiting (the request coalesced into it), or the active one (the request is kept and
 * runs when it finishes). Callers check MQTT_ENABLED: with MQTT disabled nothing may
 * ever be enqueued for EMQX.
 */
export async function requestBrokerSync(queues: JobQueues, reason: string, actor = 'system'): Promise<Job> {
  return queues.submit('broker.sync', { reason: reason.slice(0, 200) }, { actor });
}

/**
 * Asks for a config push batch from outside a job: a worker whose MQTT link connected
 * does, since push requests may wait in the database whose batch was never enqueued (a
 * crash between a commit and its enqueue). A batch with nothing to serve does nothing.
 */
export async function requestPushBatch(queues: JobQueues): Promise<Job> {
  return queues.submit('node.push-configs', {}, { actor: 'system' });
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
  const queue = queues.queue(JOBS['broker.sync'].queue);
  if (!config.mqtt.enabled) {
    await queue.removeJobScheduler(BROKER_RECONCILE_SCHEDULER_ID);
    return;
  }
  await queue.upsertJobScheduler(
    BROKER_RECONCILE_SCHEDULER_ID,
    { every: everyMs },
    {
      name: 'broker.sync' satisfies keyof typeof JOBS,
      // Signed like every job: the worker refuses an envelope it cannot verify.
      data: queues.signedEnvelope('broker.sync', 'system', { reason: SCHEDULED_SYNC_REASON }),
      // No retries: the next tick is the retry.
      opts: { attempts: 1, removeOnComplete: { count: 100 }, removeOnFail: { count: 1_000, age: 7 * 24 * 3600 } },
    },
  );
}
