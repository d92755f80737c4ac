import type { FilterQuery } from '@mikro-orm/core';
import type { AuditRow } from '../db/closing-write.js';
import type { Em } from '../db/orm.js';
import { newId } from '../domain/ids.js';
import { idCursor, pageLimit, toPage, type Page, type PageRequest } from '../domain/paging.js';
import { AuditRecord } from '../domain/entities/audit.js';

export interface AuditEntry {
  actor: string;
  /** The job type that made the change (`node.create`, ...). */
  action: string;
  entityType: string;
  entityId: string | null;
  /** What changed, for a person reading the log. Never a secret: no hash, no key. */
  detail: Record<string, unknown>;
}

interface AuditView extends AuditEntry {
  id: string;
  at: string;
}

interface AuditFilter {
  actor?: string;
  action?: string;
  entityType?: string;
  entityId?: string;
}

const auditView = (r: AuditRecord): AuditView => ({
  id: r.id,
  at: r.at.toISOString(),
  actor: r.actor,
  action: r.action,
  entityType: r.entityType,
  entityId: r.entityId ?? null,
  detail: r.detail,
});

export class AuditRepository {
  readonly #pending: AuditRow[] = [];

  constructor(private readonly em: Em) {}

  /**
   * Kept until the job's closing write (the runner hands `takePending()` to the
   * transaction, src/db/closing-write.ts), which inserts it with the ledger row in the
   * job's transaction: the record commits if and only if the change does.
   */
  record(entry: AuditEntry): string {
    const id = newId();
    this.#pending.push({ id, at: new Date(), ...entry });
    return id;
  }

  /** The rows recorded so far in this unit of work; they are the caller's to write now. */
  takePending(): AuditRow[] {
    return this.#pending.splice(0);
  }

  /** Records written before `olderThan` (AUDIT_RETENTION_DAYS); returns how many were removed. */
  async prune(olderThan: Date): Promise<number> {
    return this.em.nativeDelete(AuditRecord, { at: { $lt: olderThan } });
  }

  /** Newest first: an audit log is read from the top. */
  async list(filter: AuditFilter = {}, req: PageRequest = {}): Promise<Page<AuditView>> {
    const limit = pageLimit(req);
    const cursor = idCursor(req);
    const where: FilterQuery<AuditRecord> = { ...filter, ...(cursor ? { id: { $lt: cursor } } : {}) };
    const rows = await this.em.find(AuditRecord, where, { orderBy: { id: 'desc' }, limit: limit + 1 });
    return toPage(rows, limit, (r) => r.id, auditView);
  }

  async get(id: string): Promise<AuditView | undefined> {
    const row = await this.em.findOne(AuditRecord, { id });
    return row ? auditView(row) : undefined;
  }
}
