import { LockMode } from '@mikro-orm/core';
import type { Em } from '../db/orm.js';
import { dialectOf, type SqlStatement, type SqlValue } from '../db/sql.js';
import type { PendingAuditRow } from './audit.js';
import { JobRecord, SystemState } from '../domain/entities/system.js';

/**
 * The exactly-once ledger. A job's id and result are written in the job's own
 * transaction: a job re-run after a crash between commit and acknowledgement finds its
 * record and returns the recorded result instead of applying twice.
 */
const LEDGER_INSERT = 'insert into job_record (job_id, type, result, completed_at) values (?, ?, ?, ?)';
const AUDIT_ROW = '(?, ?, ?, ?, ?, ?, ?)';

/**
 * The closing write's texts by number of audit rows, made once: the same string each time
 * lets src/db/sql.ts find its memoized forms of it by a hash V8 keeps on the string.
 */
const auditTexts = new Map<number, { audit: string; withLedger: string }>();
function closingTexts(rows: number): { audit: string; withLedger: string } {
  let texts = auditTexts.get(rows);
  if (!texts) {
    const audit = `insert into audit_record (id, at, actor, action, entity_type, entity_id, detail) values ${Array.from({ length: rows }, () => AUDIT_ROW).join(', ')}`;
    texts = { audit, withLedger: `with audit as (${audit}) ${LEDGER_INSERT}` };
    auditTexts.set(rows, texts);
  }
  return texts;
}

export class JobLedgerRepository {
  constructor(private readonly em: Em) {}

  async recordedResult(jobId: string): Promise<{ result: unknown } | undefined> {
    const row = await this.em.findOne(JobRecord, { jobId });
    return row ? { result: row.result } : undefined;
  }

  /**
   * The job's closing write: its ledger row and the audit rows its processor recorded, as
   * one statement for the transaction to run just before COMMIT (src/db/unit-of-work.ts;
   * on PostgreSQL a CTE, sent with COMMIT in one round trip). If the job committed
   * before, the ledger insert collides and the whole transaction rolls back (the runner
   * then answers with the recorded result).
   */
  closingWrite(jobId: string, type: string, result: unknown, audit: readonly PendingAuditRow[] = []): SqlStatement[] {
    const ledger: SqlValue[] = [jobId, type, JSON.stringify(result ?? null), new Date()];
    if (audit.length === 0) return [{ text: LEDGER_INSERT, params: ledger }];
    const auditValues = audit.flatMap((r) => [r.id, r.at, r.actor, r.action, r.entityType, r.entityId, r.detail]);
    const texts = closingTexts(audit.length);
    if (dialectOf(this.em) === 'postgresql') {
      return [{ text: texts.withLedger, params: [...auditValues, ...ledger] }];
    }
    return [
      { text: texts.audit, params: auditValues },
      { text: LEDGER_INSERT, params: ledger },
    ];
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

/**
 * Broker sync bookkeeping. Operations that change credentials bump `pendingSeq` in their
 * own transaction; a sync that read the database at pendingSeq = n records
 * `appliedSeq = n` when EMQX matches, so "pending" (pendingSeq > appliedSeq) survives
 * crashes and lost follow-up jobs and the scheduled reconcile can pick it up.
 */
export interface BrokerSyncState {
  pendingSeq: number;
  appliedSeq: number;
  /** The data epoch (restore count) EMQX was last synced to. */
  syncedEpoch: number;
  lastError: string | null;
  lastSyncAt: string | null;
  /** Why the latest pending mark was made (diagnostics only). */
  lastReason?: string;
}

export const INITIAL_BROKER_SYNC_STATE: BrokerSyncState = Object.freeze({
  pendingSeq: 0,
  appliedSeq: 0,
  syncedEpoch: 0,
  lastError: null,
  lastSyncAt: null,
});

export class SystemStateRepository {
  /** Set during this unit of work when a broker sync should be requested after commit. */
  #brokerSyncRequest: string | undefined;

  constructor(private readonly em: Em) {}

  /**
   * Why this unit of work wants a broker sync requested once it has committed, if it
   * does. The runner reads it after commit (the repositories live for one transaction).
   * The pending mark in the database is what guarantees the sync happens (the scheduled
   * reconcile finds it even if the request is lost); the request only makes it prompt.
   */
  get brokerSyncRequest(): string | undefined {
    return this.#brokerSyncRequest;
  }

  /** Asks for a sync after commit without marking anything pending (the sync itself uses it). */
  requestBrokerSyncAfterCommit(reason: string): void {
    this.#brokerSyncRequest = reason;
  }

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

  async brokerSyncState(): Promise<BrokerSyncState> {
    const stored = await this.get<Partial<BrokerSyncState>>(STATE_KEYS.brokerSync);
    return { ...INITIAL_BROKER_SYNC_STATE, ...stored };
  }

  /**
   * Marks EMQX as behind the database, in the caller's transaction. Read-modify-write of
   * one row: PostgreSQL's row lock on the upsert serializes concurrent marks, so two
   * commits never record the same sequence; on SQLite writers are serialized anyway.
   */
  async markBrokerSyncPending(reason: string): Promise<BrokerSyncState> {
    const current = await this.lockedBrokerSyncState();
    const next = { ...current, pendingSeq: current.pendingSeq + 1, lastReason: reason };
    await this.set(STATE_KEYS.brokerSync, next);
    this.#brokerSyncRequest = reason;
    return next;
  }

  /** For the sync itself: record what it applied (appliedSeq, syncedEpoch, lastError...). */
  async updateBrokerSyncState(patch: Partial<BrokerSyncState>): Promise<BrokerSyncState> {
    const next = { ...(await this.lockedBrokerSyncState()), ...patch };
    await this.set(STATE_KEYS.brokerSync, next);
    return next;
  }

  /**
   * For the sync, at its end: EMQX now matches the database as the sync read it, at
   * pendingSeq `seq` and data epoch `epoch`. The locked read sees marks committed while the
   * sync ran, which stay pending (the returned state says so) because appliedSeq only
   * moves to what the sync actually read.
   */
  async recordBrokerSyncApplied(applied: { seq: number; epoch: number; at: Date }): Promise<BrokerSyncState> {
    const current = await this.lockedBrokerSyncState();
    const next: BrokerSyncState = {
      ...current,
      appliedSeq: Math.max(current.appliedSeq, applied.seq),
      syncedEpoch: Math.max(current.syncedEpoch, applied.epoch),
      lastError: null,
      lastSyncAt: applied.at.toISOString(),
    };
    await this.set(STATE_KEYS.brokerSync, next);
    return next;
  }

  /**
   * Reads the state row FOR UPDATE (PostgreSQL; SQLite has one writer and ignores the
   * clause) so concurrent increments are never lost. The row is created first, because
   * FOR UPDATE cannot lock a row that does not exist yet.
   */
  private async lockedBrokerSyncState(): Promise<BrokerSyncState> {
    const key = STATE_KEYS.brokerSync;
    await this.em.upsert(
      SystemState,
      { key, value: { ...INITIAL_BROKER_SYNC_STATE }, updatedAt: new Date() },
      { onConflictAction: 'ignore' },
    );
    const lockMode = this.em.isInTransaction() ? LockMode.PESSIMISTIC_WRITE : undefined;
    const row = await this.em.findOne(SystemState, { key }, { lockMode, refresh: true });
    return { ...INITIAL_BROKER_SYNC_STATE, ...(row?.value as Partial<BrokerSyncState> | undefined) };
  }
}
