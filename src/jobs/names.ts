/**
 * Queue names and how each queue runs. Job types and their rules live in the job table
 * (table.ts); this module is a leaf so that low-level code (queue client, Bull Board,
 * metrics) can name queues without importing every processor.
 */
export const QUEUES = {
  operations: 'operations',
  snapshotRestore: 'snapshot-restore',
  brokerSync: 'broker-sync',
  snapshots: 'snapshots',
} as const;

export type QueueName = (typeof QUEUES)[keyof typeof QUEUES];
export const QUEUE_NAMES = Object.values(QUEUES) as QueueName[];

export interface QueueRule {
  /** Jobs one worker process runs at once: a number, or WORKER_CONCURRENCY. */
  readonly concurrency: number | 'configured';
  /**
   * Never two jobs at a time across EVERY worker process (BullMQ's global concurrency 1):
   * a restore replaces every row; syncs and pushes write EMQX state in order.
   */
  readonly globallySerial: boolean;
}

export const QUEUE_RULES: { readonly [Q in QueueName]: QueueRule } = {
  [QUEUES.operations]: { concurrency: 'configured', globallySerial: false },
  [QUEUES.snapshotRestore]: { concurrency: 1, globallySerial: true },
  [QUEUES.brokerSync]: { concurrency: 1, globallySerial: true },
  // Exports are heavy (every row, gzip, encryption): a few at a time per process.
  [QUEUES.snapshots]: { concurrency: 2, globallySerial: false },
};

/** How many jobs of `queue` one worker process runs at once. */
export function concurrencyOf(queue: QueueName, workerConcurrency: number): number {
  const { concurrency } = QUEUE_RULES[queue];
  return concurrency === 'configured' ? workerConcurrency : concurrency;
}
