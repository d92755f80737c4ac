/**
 * meshq's own state rows (system_state): the data epoch (restore count) and the broker
 * sync's bookkeeping. The job ledger is the database layer's (src/db/closing-write.ts).
 */
import { LockMode } from '@mikro-orm/core';
import type { Em } from '../db/orm.js';
import { SystemState } from '../domain/entities/system.js';

const STATE_KEYS = {
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

const INITIAL_BROKER_SYNC_STATE: BrokerSyncState = Object.freeze({
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
