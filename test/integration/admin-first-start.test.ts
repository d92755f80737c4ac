/**
 * First start with ADMIN_PASSWORD: processes started together on a fresh database (the
 * API and workers of compose) each try to create the administrator; exactly one does and
 * none of them fails.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectOrm, type Orm } from '../../src/db/orm.js';
import { migrateUnderLock } from '../../src/db/migrate.js';
import { UnitOfWork } from '../../src/db/unit-of-work.js';
import { parseServerKey } from '../../src/crypto.js';
import { ensureAdmin, verifyAdmin } from '../../src/repositories/admin-account.js';
import { waitFor } from '../support/processes.js';
import { createTestDatabase, DIALECTS, TEST_SECRET_KEY, type TestDatabase } from '../support/db.js';

const PROCESSES = 4;

describe.each(DIALECTS)('administrator created at first start (%s)', (dialect) => {
  let db: TestDatabase;
  const orms: Orm[] = [];

  beforeAll(async () => {
    db = await createTestDatabase(dialect, 'admin_first_start');
    const config = db.config();
    // One ORM (its own connections) per simulated process.
    for (let i = 0; i < PROCESSES; i++) orms.push(await connectOrm(config));
    await migrateUnderLock(orms[0]!, config);
  });

  afterAll(async () => {
    for (const orm of orms) await orm.close(true);
    await db?.drop();
  });

  it('is created once when several processes start at the same moment, and none of them fails', async () => {
    const serverKey = parseServerKey(TEST_SECRET_KEY);
    // PostgreSQL: make the race certain. A lock that lets reads through but holds inserts
    // keeps every process between "no administrator yet" and its insert until all are
    // there. (SQLite's writers take the write lock before they look, one at a time.)
    const gate = dialect === 'postgresql' ? new pg.Client({ connectionString: db.url }) : undefined;
    if (gate) {
      await gate.connect();
      await gate.query('begin');
      await gate.query('lock table admin_user in exclusive mode');
    }
    const attempts = Promise.allSettled(
      orms.map((orm, i) => ensureAdmin({ uow: new UnitOfWork(orm, dialect), serverKey }, `first-start-password-${i}`)),
    );
    if (gate) {
      await waitFor('every process to wait at its insert', async () => {
        const { rows } = await gate.query<{ n: string }>(
          "select count(*) as n from pg_locks where relation = 'admin_user'::regclass and not granted",
        );
        return Number(rows[0]!.n) === PROCESSES;
      }, 30_000);
      await gate.query('commit');
      await gate.end();
    }
    const results = await attempts;
    expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
    const rows = await orms[0]!.em.fork().getConnection().execute<{ n: number | string }[]>('select count(*) as n from admin_user');
    expect(Number(rows[0]!.n)).toBe(1);
    // Exactly one process's password took effect.
    const uow = new UnitOfWork(orms[0]!, dialect);
    const matches = await Promise.all(orms.map((_, i) => verifyAdmin({ uow, serverKey }, 'admin', `first-start-password-${i}`)));
    expect(matches.filter(Boolean)).toHaveLength(1);
  });
});
