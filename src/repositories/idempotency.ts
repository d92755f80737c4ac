/**
 * Idempotency keys: what each (caller, key) was first used for and which job it made.
 * The row is inserted before the API checks or enqueues anything, so its primary key
 * serializes concurrent requests with one key: one inserts, the others read its job. It
 * outlives the job in Redis, so a late retry is answered from the ledger.
 */
import type { Em } from '../db/orm.js';
import { unmanaged } from '../db/unit-of-work.js';
import { IdempotencyKey } from '../domain/entities/system.js';

export interface IdempotencyRecord {
  keyHash: string;
  actor: string;
  jobId: string;
  type: string;
  requestHash: string;
  createdAt: Date;
}

const record = (r: IdempotencyKey): IdempotencyRecord => ({
  keyHash: r.keyHash,
  actor: r.actor,
  jobId: r.jobId,
  type: r.type,
  requestHash: r.requestHash,
  createdAt: r.createdAt,
});

export class IdempotencyRepository {
  constructor(private readonly em: Em) {}

  /**
   * Inserts the key's row; false when a row for the key exists already (nothing changes
   * then). "On conflict do nothing" rather than a caught error: on PostgreSQL a failed
   * insert would abort the transaction it runs in.
   */
  async claim(row: IdempotencyRecord): Promise<boolean> {
    const res = await this.em.createQueryBuilder(IdempotencyKey).insert({ ...row }).onConflict('keyHash').ignore().execute('run');
    return res.affectedRows > 0;
  }

  async get(keyHash: string): Promise<IdempotencyRecord | undefined> {
    const row = await this.em.findOne(IdempotencyKey, { keyHash }, unmanaged);
    return row ? record(row) : undefined;
  }

  /** Gives the key back (its first request was refused, or its job cancelled): the next request with it starts afresh. */
  async release(keyHash: string, jobId: string): Promise<void> {
    await this.em.nativeDelete(IdempotencyKey, { keyHash, jobId });
  }

  /** Gives back the key that made job `jobId` (the job was cancelled). */
  async releaseJob(jobId: string): Promise<void> {
    await this.em.nativeDelete(IdempotencyKey, { jobId });
  }

  /** Keys older than `olderThan`; returns how many were removed. */
  async prune(olderThan: Date): Promise<number> {
    return this.em.nativeDelete(IdempotencyKey, { createdAt: { $lt: olderThan } });
  }
}
