/**
 * retention.prune through the real runner on both dialects: it removes exactly the rows
 * past their age (ledger rows and idempotency keys past the jobs' retention, staged
 * uploads past their lifetime, audit records past AUDIT_RETENTION_DAYS) and nothing
 * younger; without AUDIT_RETENTION_DAYS audit records are kept whatever their age.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditRecord } from '../../src/domain/entities/audit.js';
import { IdempotencyKey, JobRecord, SnapshotArchive, SnapshotArchiveChunk } from '../../src/domain/entities/system.js';
import { newId } from '../../src/domain/ids.js';
import { JOB_RETENTION_MS } from '../../src/jobs/processors/retention.js';
import { STAGED_TTL_MS } from '../../src/jobs/processors/snapshots.js';
import { DIALECTS } from '../support/db.js';
import { createHarness, type Harness } from '../support/harness.js';

const DAY = 24 * 3600 * 1000;
/** Far enough either side of an age that the time the job takes to start cannot blur it. */
const MARGIN = 60_000;
const AUDIT_DAYS = 30;

async function seed(h: Harness, label: string) {
  const em = h.orm.em.fork();
  const now = Date.now();
  const at = (ageMs: number) => new Date(now - ageMs);
  const ids = { ledgerOld: `old-${label}`, ledgerNew: `new-${label}`, keyOld: 'a'.repeat(63) + label[0], keyNew: 'b'.repeat(63) + label[0], stagedOld: newId(), stagedNew: newId(), exportOld: newId(), auditOld: newId(), auditNew: newId() };
  await em.insert(JobRecord, { jobId: ids.ledgerOld, type: 'config.create', result: { id: 1 }, completedAt: at(JOB_RETENTION_MS + MARGIN) });
  await em.insert(JobRecord, { jobId: ids.ledgerNew, type: 'config.create', result: { id: 2 }, completedAt: at(JOB_RETENTION_MS - MARGIN) });
  const key = (keyHash: string, createdAt: Date) => ({ keyHash, actor: 'admin', jobId: `idem-${keyHash.slice(0, 8)}`, type: 'config.create', requestHash: 'c'.repeat(64), createdAt });
  await em.insert(IdempotencyKey, key(ids.keyOld, at(JOB_RETENTION_MS + MARGIN)));
  await em.insert(IdempotencyKey, key(ids.keyNew, at(JOB_RETENTION_MS - MARGIN)));
  const archive = (id: string, kind: string, createdAt: Date) => ({ id, kind, createdAt, size: 1, sha256: 'd'.repeat(64), schemaVersion: 'x', counts: {}, sealedKey: kind === 'staged' ? 'sealed' : null });
  // Each file with its bytes, stored in pieces: they go with it.
  const stored = async (id: string, kind: string, createdAt: Date) => {
    await em.insert(SnapshotArchiveChunk, { archiveId: id, seq: 0, data: Buffer.from('x') });
    await em.insert(SnapshotArchive, archive(id, kind, createdAt));
  };
  await stored(ids.stagedOld, 'staged', at(STAGED_TTL_MS + MARGIN));
  await stored(ids.stagedNew, 'staged', at(STAGED_TTL_MS - MARGIN));
  // Exports are SNAPSHOT_KEEP's business, not retention's, however old.
  await stored(ids.exportOld, 'export', at(365 * DAY));
  const audit = (id: string, when: Date) => ({ id, at: when, actor: 'admin', action: 'config.create', entityType: 'config', entityId: null, detail: {} });
  await em.insert(AuditRecord, audit(ids.auditOld, at(AUDIT_DAYS * DAY + MARGIN)));
  await em.insert(AuditRecord, audit(ids.auditNew, at(AUDIT_DAYS * DAY - MARGIN)));
  return ids;
}

async function present(h: Harness, ids: Record<string, string>): Promise<string[]> {
  const em = h.orm.em.fork();
  const out: string[] = [];
  for (const [name, id] of Object.entries(ids)) {
    const found = name.startsWith('ledger')
      ? await em.count(JobRecord, { jobId: id })
      : name.startsWith('key')
        ? await em.count(IdempotencyKey, { keyHash: id })
        : name.startsWith('audit')
          ? await em.count(AuditRecord, { id })
          : await em.count(SnapshotArchive, { id });
    // A stored file and its pieces are there, or gone, together.
    if (name.startsWith('staged') || name.startsWith('export')) expect(await em.count(SnapshotArchiveChunk, { archiveId: id }), name).toBe(found);
    if (found) out.push(name);
  }
  return out.sort();
}

describe.each(DIALECTS)('retention on %s', (dialect) => {
  let withAudit: Harness;
  let keepAudit: Harness;

  beforeAll(async () => {
    withAudit = await createHarness(dialect, 'retention', { env: { AUDIT_RETENTION_DAYS: String(AUDIT_DAYS) } });
    keepAudit = await createHarness(dialect, 'retention_keep');
  });
  afterAll(async () => {
    await withAudit?.close();
    await keepAudit?.close();
  });

  it('prunes exactly the rows past their age, and nothing younger', async () => {
    const ids = await seed(withAudit, 'with');
    const result = await withAudit.run<Record<string, unknown>>('retention.prune', {}, { jobId: randomUUID(), actor: 'system' });
    expect(result).toEqual({ ledger: 1, idempotencyKeys: 1, stagedUploads: 1, audit: 1 });
    expect(await present(withAudit, ids)).toEqual(['auditNew', 'exportOld', 'keyNew', 'ledgerNew', 'stagedNew']);

    // Run again: nothing else is past its age (its own ledger row and audit record are new).
    expect(await withAudit.run('retention.prune', {}, { jobId: randomUUID(), actor: 'system' })).toEqual({ ledger: 0, idempotencyKeys: 0, stagedUploads: 0, audit: 0 });
    const own = await withAudit.read(async (r) => (await r.audit.list({ action: 'retention.prune' }, { limit: 10 })).items);
    expect(own).toHaveLength(2);
    expect(own[0]).toMatchObject({ actor: 'system', entityType: 'system' });
  });

  it('keeps audit records of any age when AUDIT_RETENTION_DAYS is not set', async () => {
    const ids = await seed(keepAudit, 'keep');
    const result = await keepAudit.run('retention.prune', {}, { jobId: randomUUID(), actor: 'admin' });
    expect(result).toEqual({ ledger: 1, idempotencyKeys: 1, stagedUploads: 1, audit: null });
    expect(await present(keepAudit, ids)).toEqual(['auditNew', 'auditOld', 'exportOld', 'keyNew', 'ledgerNew', 'stagedNew']);
  });
});
