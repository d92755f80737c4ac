import type { Em } from '../../db/orm.js';
import { JobRecord, SystemState } from './entities.js';

/**
 * The exactly-once ledger. A job's id and result are written in the job's own
 * transaction: a job re-run after a crash between commit and acknowledgement finds its
 * record and returns the recorded result instead of applying twice.
 */
export class JobLedgerRepository {
  constructor(private readonly em: Em) {}

  async recordedResult(jobId: string): Promise<{ result: unknown } | undefined> {
    const row = await this.em.findOne(JobRecord, { jobId });
    return row ? { result: row.result } : undefined;
  }

  record(jobId: string, type: string, result: unknown): void {
    this.em.create(JobRecord, { jobId, type, result: result ?? null, completedAt: new Date() });
  }

  /** Ledger rows only need to outlive BullMQ's retention of the same jobs. */
  async pruneOlderThan(cutoff: Date): Promise<number> {
    return this.em.nativeDelete(JobRecord, { completedAt: { $lt: cutoff } });
  }
}

export const STATE_KEYS = {
  dataEpoch: 'data-epoch',
  brokerSync: 'broker-sync',
} as const;

export class SystemStateRepository {
  constructor(private readonly em: Em) {}

  async get<T>(key: string): Promise<T | undefined> {
    const row = await this.em.findOne(SystemState, { key });
    return row?.value as T | undefined;
  }

  async set(key: string, value: unknown): Promise<void> {
    await this.em.upsert(SystemState, { key, value, updatedAt: new Date() });
  }

  async dataEpoch(): Promise<number> {
    return (await this.get<number>(STATE_KEYS.dataEpoch)) ?? 0;
  }

  /** Bumped by every restore; the broker sync records the epoch it applied. */
  async bumpDataEpoch(): Promise<number> {
    const next = (await this.dataEpoch()) + 1;
    await this.set(STATE_KEYS.dataEpoch, next);
    return next;
  }
}
