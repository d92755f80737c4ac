/**
 * Queue names. Job types and their mapping to queues, schemas and processors live in
 * jobs.ts; this module exists so that low-level code (queue client, Bull Board,
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
