/**
 * Scheduled backups: with SNAPSHOT_SCHEDULE set, a BullMQ job scheduler adds a
 * `snapshot.export` on that cron pattern (the export prunes to SNAPSHOT_KEEP, as any
 * export does). Every worker process registers it at start; an upsert with the same id is
 * one scheduler however many workers there are, and a worker started without the
 * variable removes it, so the last configuration started is the one in force.
 */
import { CronExpressionParser } from 'cron-parser';
import type { Config } from '../config.js';
import type { UnitOfWork } from '../db/unit-of-work.js';
import { createRepositories } from '../repositories/index.js';
import type { JobQueues } from './queue-client.js';
import { JOBS } from './table.js';

export const SNAPSHOT_SCHEDULER_ID = 'snapshot-export-schedule';
export const SCHEDULED_EXPORT_ACTOR = 'schedule';

export async function configureScheduledExport(queues: JobQueues, config: Pick<Config, 'snapshotSchedule'>): Promise<void> {
  const queue = queues.queue(JOBS['snapshot.export'].queue);
  if (!config.snapshotSchedule) {
    await queue.removeJobScheduler(SNAPSHOT_SCHEDULER_ID);
    return;
  }
  await queue.upsertJobScheduler(
    SNAPSHOT_SCHEDULER_ID,
    { pattern: config.snapshotSchedule },
    {
      name: 'snapshot.export' satisfies keyof typeof JOBS,
      // Signed like every job: the worker refuses an envelope it cannot verify.
      data: queues.signedEnvelope('snapshot.export', SCHEDULED_EXPORT_ACTOR, {}),
      // A failed export is retried a few times; the next tick is a fresh one anyway.
      opts: { attempts: 3, removeOnComplete: { count: 100 }, removeOnFail: { count: 1_000, age: 7 * 24 * 3600 } },
    },
  );
}

/** When the newest stored export was made (ms since the epoch), or null when there is none. */
export async function lastExportAt(deps: { uow: UnitOfWork; serverKey: Buffer }): Promise<number | null> {
  const page = await createRepositories(deps.uow.fork(), { serverKey: deps.serverKey }).snapshots.listExports({ limit: 1 });
  const newest = page.items[0];
  return newest ? Date.parse(newest.createdAt) : null;
}

/**
 * Readiness warnings of the schedule (a warning, not unreadiness: the process still
 * serves and runs jobs). `since`: when the process started.
 */
export async function scheduleWarnings(
  deps: { config: Pick<Config, 'snapshotSchedule'>; uow: UnitOfWork; serverKey: Buffer },
  since: number,
): Promise<string[]> {
  const pattern = deps.config.snapshotSchedule;
  if (!pattern) return [];
  const overdue = overdueExport(pattern, await lastExportAt(deps), Date.now(), since);
  return overdue ? [overdue] : [];
}

/**
 * Why scheduled backups look overdue, or null when they do not: the newest export is
 * older than two periods of the schedule (the time between its next two ticks), or there
 * is none although two periods have passed since `since` (this process's start).
 */
export function overdueExport(pattern: string, last: number | null, now: number, since: number): string | null {
  const ticks = CronExpressionParser.parse(pattern, { currentDate: new Date(now) });
  const first = ticks.next().getTime();
  const period = ticks.next().getTime() - first;
  if (last === null) {
    return now - since > 2 * period ? `no successful snapshot export although SNAPSHOT_SCHEDULE is "${pattern}"` : null;
  }
  if (now - last <= 2 * period) return null;
  return `the last successful snapshot export (${new Date(last).toISOString()}) is older than two periods of SNAPSHOT_SCHEDULE "${pattern}"`;
}
