/**
 * Reads and prunes the exactly-once ledger (`job_record`). Rows are written only by a
 * job's closing write (src/db/closing-write.ts), with the job's effects.
 */
import type { Em } from '../db/orm.js';
import { unmanaged } from '../db/unit-of-work.js';
import { JobRecord } from '../domain/entities/system.js';

export interface LedgerEntry {
  jobId: string;
  type: string;
  result: unknown;
  completedAt: Date;
}

export class LedgerRepository {
  constructor(private readonly em: Em) {}

  /** The committed outcome of a job, if it committed (and was not pruned). */
  async get(jobId: string): Promise<LedgerEntry | undefined> {
    const row = await this.em.findOne(JobRecord, { jobId }, unmanaged);
    return row ? { jobId: row.jobId, type: row.type, result: row.result, completedAt: row.completedAt } : undefined;
  }

  /** Rows of jobs that completed before `olderThan`; returns how many were removed. */
  async prune(olderThan: Date): Promise<number> {
    return this.em.nativeDelete(JobRecord, { completedAt: { $lt: olderThan } });
  }
}
