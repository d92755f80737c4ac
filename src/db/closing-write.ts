/**
 * A job's closing write: its ledger row (the exactly-once record: job id and result) and
 * the audit rows its processor recorded, written at the very end of the job's transaction,
 * after the flush and just before COMMIT (src/db/unit-of-work.ts). If the job committed
 * before, the ledger insert collides and the whole transaction rolls back; the runner then
 * answers with the recorded result (recordedResult below).
 *
 * How it is sent is decided here, and only here:
 *  - PostgreSQL: the audit rows and the ledger row are one statement (a CTE), sent with
 *    COMMIT as one simple query, so a job pays one round trip for its closing write and its
 *    commit. A simple query cannot carry bound parameters, so the values are written into
 *    the text as literals (inlinePostgres); if the statement fails, PostgreSQL skips the
 *    rest of the query, COMMIT included, and the transaction rolls back as for any failure.
 *  - SQLite: bound statements through src/db/sql.ts (no round trips to save), then COMMIT.
 *
 * The texts are made once per number of audit rows and kept: src/db/sql.ts finds its
 * memoized forms of a text by a hash V8 keeps on the string object, so handing it the same
 * string each time makes that look-up cheap.
 */
import type { Dialect } from '../config.js';
import { JobRecord } from '../domain/entities/system.js';
import type { Em } from './orm.js';
import { inlinePostgres } from './pg-literals.js';
import type { SqlStatement, SqlValue } from './sql.js';

/** An audit row waiting for the job's closing write. */
export interface AuditRow {
  id: string;
  at: Date;
  actor: string;
  action: string;
  entityType: string;
  entityId: string | null;
  detail: Record<string, unknown>;
}

/** What a job's closing write records. */
export interface JobClosing {
  jobId: string;
  type: string;
  result: unknown;
  audit: readonly AuditRow[];
}

const LEDGER_INSERT = 'insert into job_record (job_id, type, result, completed_at) values (?, ?, ?, ?)';
const AUDIT_ROW = '(?, ?, ?, ?, ?, ?, ?)';

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

/** The statements of a job's closing write, batched as `dialect` sends them best. */
export function closingStatements(dialect: Dialect, closing: JobClosing): SqlStatement[] {
  const ledger: SqlValue[] = [closing.jobId, closing.type, JSON.stringify(closing.result ?? null), new Date()];
  const { audit } = closing;
  if (audit.length === 0) return [{ text: LEDGER_INSERT, params: ledger }];
  const auditValues = audit.flatMap((r) => [r.id, r.at, r.actor, r.action, r.entityType, r.entityId, r.detail]);
  const texts = closingTexts(audit.length);
  if (dialect === 'postgresql') return [{ text: texts.withLedger, params: [...auditValues, ...ledger] }];
  return [
    { text: texts.audit, params: auditValues },
    { text: LEDGER_INSERT, params: ledger },
  ];
}

/**
 * PostgreSQL: the simple query that runs `statements`, in order, and then COMMIT. Refuses
 * (before anything is sent) values it cannot write as literals.
 */
export function pgCommitQuery(statements: readonly SqlStatement[]): string {
  let out = '';
  for (const statement of statements) out += `${inlinePostgres(statement)}; `;
  return `${out}commit`;
}

/** The recorded result of a job that committed, if it did. */
export async function recordedResult(em: Em, jobId: string): Promise<{ result: unknown } | undefined> {
  const row = await em.findOne(JobRecord, { jobId });
  return row ? { result: row.result } : undefined;
}
