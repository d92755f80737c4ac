/**
 * retention.prune: the tables that would otherwise only grow. Scheduled daily by the
 * workers (src/jobs/retention-schedule.ts) and submittable by an administrator. Each
 * kind of row goes once it is past its own age, measured when the job runs:
 *  - ledger rows and idempotency keys: the jobs' retention, as long as Redis keeps a
 *    failed job (src/jobs/queue-client.ts); past it, neither a re-run of the job nor a
 *    retry of its request can still arrive;
 *  - staged restore uploads: past their lifetime (STAGED_TTL_MS);
 *  - audit records: only when AUDIT_RETENTION_DAYS is set (default: kept).
 */
import type { JobContext } from '../context.js';
import type { RetentionPrune } from '../payloads.js';
import { STAGED_TTL_MS } from './snapshots.js';

/** How long the ledger and idempotency keys are kept: Redis's retention of failed jobs. */
export const JOB_RETENTION_MS = 7 * 24 * 3600 * 1000;
const DAY_MS = 24 * 3600 * 1000;

export interface RetentionResult {
  ledger: number;
  idempotencyKeys: number;
  stagedUploads: number;
  /** null: AUDIT_RETENTION_DAYS is not set and audit records are kept. */
  audit: number | null;
}

export async function pruneRetention(_data: RetentionPrune, ctx: JobContext): Promise<RetentionResult> {
  const now = Date.now();
  const jobsBefore = new Date(now - JOB_RETENTION_MS);
  const days = ctx.config.auditRetentionDays;
  const result: RetentionResult = {
    ledger: await ctx.repos.ledger.prune(jobsBefore),
    idempotencyKeys: await ctx.repos.idempotency.prune(jobsBefore),
    stagedUploads: await ctx.repos.snapshots.pruneStaged(new Date(now - STAGED_TTL_MS)),
    audit: days ? await ctx.repos.audit.prune(new Date(now - days * DAY_MS)) : null,
  };
  ctx.repos.audit.record({ actor: ctx.actor, action: 'retention.prune', entityType: 'system', entityId: null, detail: { ...result } });
  return result;
}
