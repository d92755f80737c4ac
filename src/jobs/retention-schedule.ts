/**
 * The daily retention run (retention.prune). Every worker process registers it at start;
 * an upsert with one id is one scheduler however many workers there are.
 */
import type { JobQueues } from './queue-client.js';
import { JOBS } from './table.js';

export const RETENTION_SCHEDULER_ID = 'retention-prune';
export const RETENTION_EVERY_MS = 24 * 3600 * 1000;

export async function configureRetentionSchedule(queues: JobQueues, everyMs = RETENTION_EVERY_MS): Promise<void> {
  await queues.queue(JOBS['retention.prune'].queue).upsertJobScheduler(
    RETENTION_SCHEDULER_ID,
    { every: everyMs },
    {
      name: 'retention.prune' satisfies keyof typeof JOBS,
      // Signed like every job: the worker refuses an envelope it cannot verify.
      data: queues.signedEnvelope('retention.prune', 'system', {}),
      // No retries beyond a few: the next day's run is the retry.
      opts: { attempts: 3, removeOnComplete: { count: 30 }, removeOnFail: { count: 30 } },
    },
  );
}
