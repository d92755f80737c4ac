/**
 * A write transaction's closing statements (a job's ledger and audit rows). On PostgreSQL
 * they travel with COMMIT as one simple query, their values written in as literals, so
 * these tests put values that quoting gets wrong through that path and read them back,
 * and check that a failing closing statement rolls back the whole transaction, and that
 * bound statements and the ORM share the transaction's one connection.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { escapeLiteral } from 'pg';
import type { Em } from '../../src/db/orm.js';
import { boundSql, inlinePostgres, quoteLiteral } from '../../src/db/sql.js';
import { AuditRecord } from '../../src/domain/entities/audit.js';
import { createRepositories } from '../../src/repositories/index.js';
import { JobRecord } from '../../src/domain/entities/system.js';
import { UniqueConstraintViolationException } from '@mikro-orm/core';
import { DIALECTS } from '../support/db.js';
import { createHarness, type Harness } from '../support/harness.js';

const AWKWARD = [
  "it's",
  'back\\slash \\x41 \\',
  "E'\\'' ; commit; drop table job_record; --",
  'a ? b $1 ?',
  'line\nbreak\ttab\r',
  'ünïcödé 🛰️ \u{10FFFF}',
  '',
];

describe.each(DIALECTS)('unit of work write transactions on %s', (dialect) => {
  let app: Harness;

  beforeAll(async () => {
    app = await createHarness(dialect, 'uow');
  });

  afterAll(async () => {
    await app?.close();
  });

  it('writes awkward values exactly, after the flush, in the same transaction', async () => {
    const jobId = randomUUID();
    const result = { texts: AWKWARD, n: -12.5, big: 1e300, none: null, nested: { "k'": ['\\'] } };
    await app.uow.write(async (em, tx) => {
      const repos = createRepositories(em, { serverKey: app.serverKey });
      for (const text of AWKWARD) repos.audit.record({ actor: text, action: 'test.awkward', entityType: 'test', entityId: jobId, detail: { text } });
      tx.closeWith(...repos.ledger.closingWrite(jobId, 'test.awkward', result, repos.audit.takePending()));
    });

    const em = app.uow.fork();
    const ledger = await em.findOneOrFail(JobRecord, { jobId });
    expect(ledger.result).toEqual(result);
    expect(ledger.type).toBe('test.awkward');
    const audit = await em.find(AuditRecord, { entityId: jobId });
    expect(audit.map((a) => a.actor).sort()).toEqual([...AWKWARD].sort());
    expect(audit.map((a) => (a.detail as { text: string }).text).sort()).toEqual([...AWKWARD].sort());
  });

  it('rolls back everything when a closing statement fails, and the next transaction is unaffected', async () => {
    const jobId = randomUUID();
    const closeWithLedger = (marker: string) =>
      app.uow.write(async (em, tx) => {
        const repos = createRepositories(em, { serverKey: app.serverKey });
        repos.audit.record({ actor: 'admin', action: 'test.dup', entityType: 'test', entityId: marker, detail: {} });
        tx.closeWith(...repos.ledger.closingWrite(jobId, 'test.dup', { marker }, repos.audit.takePending()));
      });
    await closeWithLedger('first');
    // Same ledger key: the insert collides, so the audit row of the same statement list
    // (and anything else of the transaction) must not commit.
    await expect(closeWithLedger('second')).rejects.toBeInstanceOf(UniqueConstraintViolationException);

    const em = app.uow.fork();
    expect(await em.count(AuditRecord, { entityId: 'second' })).toBe(0);
    expect(await em.count(AuditRecord, { entityId: 'first' })).toBe(1);
    expect((await em.findOneOrFail(JobRecord, { jobId })).result).toEqual({ marker: 'first' });

    const next = randomUUID();
    await app.uow.write(async (em2, tx) => {
      tx.closeWith(...createRepositories(em2, { serverKey: app.serverKey }).ledger.closingWrite(next, 'test.next', 1));
    });
    expect((await app.uow.fork().findOneOrFail(JobRecord, { jobId: next })).result).toBe(1);
  });

  // Bound statements, the ORM and the closing write must all be on the transaction's one
  // connection (on PostgreSQL, src/db/sql.ts goes to the held pg client directly).
  it('runs bound statements and ORM queries in one transaction, committed or rolled back together', async () => {
    const ledgerRow = (em: Em, jobId: string) =>
      boundSql(em).query('insert into job_record (job_id, type, result, completed_at) values (?, ?, ?, ?)', [jobId, 'test.conn', { ok: true }, new Date()]);

    const kept = randomUUID();
    const seen = await app.uow.write(async (em) => {
      const res = await ledgerRow(em, kept);
      expect(res.affected).toBe(1);
      return em.count(JobRecord, { jobId: kept }); // the ORM sees the uncommitted row
    });
    expect(seen).toBe(1);
    expect(await app.uow.fork().count(JobRecord, { jobId: kept })).toBe(1);

    const dropped = randomUUID();
    await expect(
      app.uow.write(async (em) => {
        await ledgerRow(em, dropped);
        expect(await em.count(JobRecord, { jobId: dropped })).toBe(1);
        throw new Error('abandon');
      }),
    ).rejects.toThrow('abandon');
    expect(await app.uow.fork().count(JobRecord, { jobId: dropped })).toBe(0);
  });
});

describe('quoteLiteral', () => {
  it("writes what node-postgres's escapeLiteral writes", () => {
    const samples = [...AWKWARD, "''", '\\', "\\'", JSON.stringify({ a: "b'c\\d", e: 'f\ng' })];
    for (let i = 0; i < 500; i++) {
      samples.push(Array.from({ length: i % 40 }, () => "ab'\\\n€🛰 ?$"[Math.floor(Math.random() * 12)]).join(''));
    }
    for (const s of samples) expect(quoteLiteral(s), s).toBe(escapeLiteral(s));
  });
});

describe('inlinePostgres', () => {
  it('quotes values and refuses what it cannot write', () => {
    expect(inlinePostgres({ text: 'select ?, ?, ?, ?', params: ["o'k", null, true, 3] })).toBe("select 'o''k', null, true, 3");
    expect(() => inlinePostgres({ text: 'select ?', params: [] })).toThrow(/more placeholders/);
    expect(() => inlinePostgres({ text: 'select ?', params: [1, 2] })).toThrow(/2 values for 1 placeholders/);
    expect(() => inlinePostgres({ text: 'select ?', params: [Number.NaN] })).toThrow(/cannot write NaN/);
    expect(() => inlinePostgres({ text: 'select ?', params: [Buffer.from('x')] })).toThrow(/cannot write/);
  });
});
