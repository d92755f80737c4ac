/**
 * A write transaction's closing write (a job's ledger and audit rows). On PostgreSQL it
 * travels with COMMIT as one simple query, its values written in as literals, so these
 * tests put values that quoting gets wrong through that path and read them back, and check
 * that a failing closing write rolls back the whole transaction, that bound statements and
 * the ORM share the transaction's one connection, that on PostgreSQL an operation's BEGIN
 * and data lock travel with its first statement (or its commit) and still come first, and
 * that every PostgreSQL connection of the unit of work speaks UTF8 whatever the database's
 * default.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { randomUUID } from 'node:crypto';
import pg, { escapeLiteral } from 'pg';
import { UniqueConstraintViolationException } from '@mikro-orm/core';
import { pgCommitQuery } from '../../src/db/closing-write.js';
import { statSync } from 'node:fs';
import { connectOrm, sqliteNative, type Em } from '../../src/db/orm.js';
import { assertUtf8, UTF8_SESSION } from '../../src/db/encoding.js';
import { pgPool } from '../../src/db/pg-client.js';
import { boundSql, type SqlStatement } from '../../src/db/sql.js';
import { UnitOfWork, type WriteTransaction } from '../../src/db/unit-of-work.js';
import { AuditRecord } from '../../src/domain/entities/audit.js';
import { JobRecord } from '../../src/domain/entities/system.js';
import { createRepositories } from '../../src/repositories/index.js';
import { createTestDatabase, DIALECTS, PG_ADMIN_URL } from '../support/db.js';
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
      tx.closeWith({ jobId, type: 'test.awkward', result, audit: repos.audit.takePending() });
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
        tx.closeWith({ jobId, type: 'test.dup', result: { marker }, audit: repos.audit.takePending() });
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
    await app.uow.write(async (_em, tx) => {
      tx.closeWith({ jobId: next, type: 'test.next', result: 1, audit: [] });
    });
    expect(await app.uow.readLedger(next)).toEqual({ result: 1 });
    expect((await app.uow.fork().findOneOrFail(JobRecord, { jobId: next })).result).toBe(1);
  });

  // Bound statements, the ORM and the closing write must all be on the transaction's one
  // connection (on PostgreSQL, the handle's statements go to the held pg client directly;
  // boundSql(em) without the handle goes through the entity manager's transaction context).
  const ledgerRows = {
    'the transaction handle': (_em: Em, tx: WriteTransaction) => tx.sql,
    'boundSql of the entity manager': (em: Em) => boundSql(em),
  };
  it.each(Object.entries(ledgerRows))('runs bound statements through %s and ORM queries in one transaction, committed or rolled back together', async (_name, sqlOf) => {
    const ledgerRow = (em: Em, tx: WriteTransaction, jobId: string) =>
      sqlOf(em, tx).query('insert into job_record (job_id, type, result, completed_at) values (?, ?, ?, ?)', [jobId, 'test.conn', { ok: true }, new Date()]);

    const kept = randomUUID();
    const seen = await app.uow.write(async (em, tx) => {
      const res = await ledgerRow(em, tx, kept);
      expect(res.affected).toBe(1);
      return em.count(JobRecord, { jobId: kept }); // the ORM sees the uncommitted row
    });
    expect(seen).toBe(1);
    expect(await app.uow.fork().count(JobRecord, { jobId: kept })).toBe(1);

    const dropped = randomUUID();
    await expect(
      app.uow.write(async (em, tx) => {
        await ledgerRow(em, tx, dropped);
        expect(await em.count(JobRecord, { jobId: dropped })).toBe(1);
        throw new Error('abandon');
      }),
    ).rejects.toThrow('abandon');
    expect(await app.uow.fork().count(JobRecord, { jobId: dropped })).toBe(0);
  });

  // An operation's BEGIN waits for its first statement, so the raw client (COPY) would run
  // before it: only an exclusive transaction, which begins at once, hands it out.
  it('tells repositories whether the transaction is exclusive, and gives its pg client to exclusive ones on PostgreSQL only', async () => {
    const seen = async (exclusive: boolean) => app.uow.write(async (_em, tx) => ({ exclusive: tx.exclusive, client: tx.pgClient !== undefined }), { exclusive });
    expect(await seen(true)).toEqual({ exclusive: true, client: dialect === 'postgresql' });
    expect(await seen(false)).toEqual({ exclusive: false, client: false });
  });

  // src/db/sqlite-checkpoint.ts: a large commit's WAL checkpoint runs in a thread. The
  // database file grows when a checkpoint copies the committed pages into it.
  it('leaves the WAL checkpoint of a commit that asks for it to a thread on SQLite, then checkpoints as before', async () => {
    const em = app.uow.fork();
    const blob = dialect === 'sqlite' ? 'randomblob(4000)' : "decode(repeat('ab', 4000), 'hex')";
    const rows = dialect === 'sqlite' ? 'with recursive c(x) as (select 1 union all select x + 1 from c where x < 3000) select x from c' : 'select generate_series(1, 3000)';
    await em.getConnection().execute(`create table bulk_test (b ${dialect === 'sqlite' ? 'blob' : 'bytea'})`);
    // 3,000 rows of 4,000 bytes: about 12 MB, three times SQLite's default checkpoint threshold
    const bulk = (deferred: boolean) =>
      app.uow.write(async (_em, tx) => {
        if (deferred) tx.checkpointAfterCommit();
        await tx.sql.query(`insert into bulk_test select ${blob} from (${rows}) r`);
      });
    const count = async () => Number((await em.getConnection().execute<{ n: number }[]>('select count(*) as n from bulk_test'))[0]!.n);
    if (dialect === 'postgresql') {
      await bulk(true);
      expect(await count()).toBe(3000);
      return;
    }
    const db = await sqliteNative(app.orm);
    const size = () => statSync(app.config.sqlitePath!).size;
    const autocheckpoint = () => db.pragma('wal_autocheckpoint', { simple: true });
    expect(autocheckpoint()).toBe(1000);

    // as before: the committing connection copies the pages into the file inside the commit
    let before = size();
    await bulk(false);
    expect(size()).toBeGreaterThan(before + 10_000_000);

    before = size();
    await bulk(true);
    // Committed with the connection's own checkpoint off, and off until the thread is done
    // (it is put back on this loop, after the thread's exit). The thread copies the pages
    // meanwhile: nothing else checkpoints, the reads below do not.
    expect(autocheckpoint()).toBe(0);
    expect(await count()).toBe(6000);
    await vi.waitFor(() => expect(autocheckpoint()).toBe(1000), { timeout: 30_000, interval: 20 });
    expect(size()).toBeGreaterThan(before + 10_000_000);
  });

  // sqliteLargePageCache: the default between transactions, the large cache only inside the
  // one that asked for it, lowered again whether it committed or not.
  it('raises the SQLite page cache for a transaction that asks for it, and only until it ends', async () => {
    const cacheSize = async (em: Em) => Number((await em.getConnection().execute<{ cache_size: number }[]>('pragma cache_size'))[0]!.cache_size);
    const inTransaction = async (tx: WriteTransaction) => Number((await tx.sql.query<{ cache_size: number }>('pragma cache_size')).rows[0]!.cache_size);
    const inside = (fail: boolean) =>
      app.uow.write(async (_em, tx) => {
        tx.largePageCache();
        tx.largePageCache();
        const size = dialect === 'sqlite' ? await inTransaction(tx) : undefined;
        if (fail) throw new Error(`cache ${size}`);
        return size;
      });
    if (dialect === 'postgresql') {
      await expect(inside(false)).resolves.toBeUndefined();
      return;
    }
    const fork = app.uow.fork();
    expect(await cacheSize(fork)).toBe(-2000);
    expect(await inside(false)).toBe(-65536);
    expect(await cacheSize(fork)).toBe(-2000);
    await expect(inside(true)).rejects.toThrow('cache -65536');
    expect(await cacheSize(fork)).toBe(-2000);
    // a transaction that does not ask keeps the default
    expect(await app.uow.write(async (_em, tx) => inTransaction(tx))).toBe(-2000);
  });
});

describe('the PostgreSQL begin, sent with the first statement', () => {
  let app: Harness;

  beforeAll(async () => {
    app = await createHarness('postgresql', 'uow_begin');
  });

  afterAll(async () => {
    await app?.close();
    vi.restoreAllMocks();
  });

  // The data lock is granted before the statement runs, whichever way the begin went.
  const LOCKS = "select count(*)::int as n from pg_locks where locktype = 'advisory' and pid = pg_backend_pid() and granted and ? = ?";
  const firstStatements = {
    'a bound statement, its values written in': { values: ["it's", "it's"], roundTrips: 2 },
    'a bound statement with bytes, which cannot be written in': { values: [Buffer.from('x'), Buffer.from('x')], roundTrips: 3 },
  };

  it.each(Object.entries(firstStatements))('%s: runs inside the transaction, holding the data lock', async (_name, { values, roundTrips }) => {
    const jobId = randomUUID();
    const sent = vi.spyOn(pg.Client.prototype, 'query');
    const held = await app.uow.write(async (_em, tx) => {
      const { rows } = await tx.sql.query<{ n: number }>(LOCKS, values);
      tx.closeWith({ jobId, type: 'test.begin', result: null, audit: [] });
      return rows[0]!.n;
    });
    // Statements sent on the transaction's client: begin (alone or with the statement), the
    // statement, the commit; not a fresh client's one-time encoding check.
    const calls = sent.mock.calls.filter(([q]) => q !== UTF8_SESSION).length;
    sent.mockRestore();
    expect(held).toBe(1);
    expect(calls).toBe(roundTrips);
    expect(await app.uow.readLedger(jobId)).toEqual({ result: null });
  });

  it("sends the begin alone before the ORM's first statement, and with the commit when nothing else goes", async () => {
    const held = await app.uow.write(async (em) => (await em.execute<{ n: number }[]>(LOCKS.replace('? = ?', 'true')))[0]!.n);
    expect(held).toBe(1);

    const jobId = randomUUID();
    const sent = vi.spyOn(pg.Client.prototype, 'query');
    await app.uow.write(async (_em, tx) => tx.closeWith({ jobId, type: 'test.begin', result: 1, audit: [] }));
    const texts = sent.mock.calls.map(([q]) => String(q)).filter((q) => q !== UTF8_SESSION);
    sent.mockRestore();
    expect(texts).toHaveLength(1);
    expect(texts[0]).toMatch(/^begin; select pg_advisory_xact_lock_shared\(\d+\); insert into job_record .*; commit$/);
    expect(await app.uow.readLedger(jobId)).toEqual({ result: 1 });
  });

  it('rolls a combined first statement back with the rest, and the client serves the next transaction', async () => {
    const jobId = randomUUID();
    const insert = 'insert into job_record (job_id, type, result, completed_at) values (?, ?, ?, ?)';
    await expect(
      app.uow.write(async (_em, tx) => {
        await tx.sql.query(insert, [jobId, 'test.begin', { n: -1 }, new Date()]);
        throw new Error('abandon');
      }),
    ).rejects.toThrow('abandon');
    expect(await app.uow.readLedger(jobId)).toBeUndefined();
    // A failing combined statement: the error is the ORM's, and nothing stays open.
    await app.uow.write(async (_em, tx) => tx.sql.query(insert, [jobId, 'test.begin', 1, new Date()]));
    await expect(app.uow.write(async (_em, tx) => tx.sql.query(insert, [jobId, 'test.begin', 2, new Date()]))).rejects.toBeInstanceOf(UniqueConstraintViolationException);
    expect(await app.uow.readLedger(jobId)).toEqual({ result: 1 });
  });
});

const commitOf = (...statements: SqlStatement[]) => pgCommitQuery(statements);

describe('the PostgreSQL closing query', () => {
  it("quotes texts as node-postgres's escapeLiteral does", () => {
    const samples = [...AWKWARD, "''", '\\', "\\'", JSON.stringify({ a: "b'c\\d", e: 'f\ng' })];
    for (let i = 0; i < 500; i++) {
      samples.push(Array.from({ length: i % 40 }, () => "ab'\\\n€🛰 ?$"[Math.floor(Math.random() * 12)]).join(''));
    }
    for (const s of samples) expect(commitOf({ text: 'select ?', params: [s] }), s).toBe(`select ${escapeLiteral(s)}; commit`);
  });

  it('writes values, ends with commit, and refuses what it cannot write', () => {
    expect(commitOf({ text: 'select ?, ?, ?, ?', params: ["o'k", null, true, 3] }, { text: 'select 1', params: [] })).toBe("select 'o''k', null, 'true', '3'; select 1; commit");
    expect(commitOf()).toBe('commit');
    expect(() => commitOf({ text: 'select ?', params: [] })).toThrow(/more placeholders/);
    expect(() => commitOf({ text: 'select ?', params: [1, 2] })).toThrow(/2 values for 1 placeholders/);
    expect(() => commitOf({ text: 'select ?', params: [Number.NaN] })).toThrow(/cannot write NaN/);
    expect(() => commitOf({ text: 'select ?', params: [Buffer.from('x')] })).toThrow(/cannot write/);
  });

  // `0-?` with -5 written bare would be `0--5`: a comment from there on, COMMIT included.
  it('keeps a negative number after a minus sign a number, and the COMMIT behind it', async () => {
    const client = new pg.Client({ connectionString: PG_ADMIN_URL });
    await client.connect();
    try {
      for (const [value, expected] of [[-5, 5], [-0.25, 0.25], [-1e300, 1e300], [7, -7]] as const) {
        await client.query('begin');
        const results = (await client.query(commitOf({ text: 'select (0.0-?)::float8 as v', params: [value] }))) as unknown as pg.QueryResult[];
        expect(results.map((r) => r.command)).toEqual(['SELECT', 'COMMIT']);
        expect(results[0]!.rows[0].v).toBe(expected);
      }
    } finally {
      await client.end();
    }
  });
});

describe('client_encoding on PostgreSQL', () => {
  // node-postgres asks for UTF8 when it connects, but a session can be switched later (a
  // pooler handing over a server connection, a stray SET): the unit of work sets it itself.
  it('is UTF8 in every write transaction, even on pooled connections switched to LATIN1 before', async () => {
    const db = await createTestDatabase('postgresql', 'uow_enc');
    const orm = await connectOrm(db.config());
    try {
      const pool = await pgPool(orm.em.fork() as Em);
      const clients = await Promise.all([pool.connect(), pool.connect(), pool.connect()]);
      for (const client of clients) await client.query("set client_encoding to 'LATIN1'");
      expect((await clients[0]!.query('show client_encoding')).rows[0].client_encoding).toBe('LATIN1');
      for (const client of clients) client.release();

      const uow = new UnitOfWork(orm, 'postgresql');
      const show = 'show client_encoding';
      // Several at once, so that every pooled client is held.
      const seen = await Promise.all(
        clients.map(() =>
          uow.write(async (em, tx) => {
            const viaHandle = (await tx.sql.query<{ client_encoding: string }>(show)).rows[0]!.client_encoding;
            const viaOrm = (await em.execute(show))[0]!.client_encoding;
            await new Promise((r) => setTimeout(r, 20)); // keep the client until all three hold one
            return [viaHandle, viaOrm];
          }),
        ),
      );
      expect(seen.flat()).toEqual(Array(6).fill('UTF8'));
    } finally {
      await orm.close(true);
      await db.drop();
    }
  });

  it('is checked: a connection that is not UTF8 is refused', () => {
    expect(() => assertUtf8([{ client_encoding: 'LATIN1' }])).toThrow(/client_encoding LATIN1.*needs UTF8/);
    expect(() => assertUtf8([])).toThrow(/needs UTF8/);
    expect(() => assertUtf8([{ client_encoding: 'UTF8' }])).not.toThrow();
  });
});
