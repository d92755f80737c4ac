import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { connectOrm, type Orm } from '../../src/db/orm.js';
import { migrateUnderLock } from '../../src/db/migrate.js';
import { MIGRATIONS } from '../../src/migrations/index.js';
import { createTestDatabase, DIALECTS, type TestDatabase } from '../support/db.js';

const migrateScript = fileURLToPath(new URL('../support/migrate-child.ts', import.meta.url));

function runMigrateChild(env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = fork(migrateScript, [], {
      env: { ...process.env, ...env },
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    child.on('exit', (code) => resolve({ code, out }));
  });
}

describe.each(DIALECTS)('migrations on %s', (dialect) => {
  let db: TestDatabase;
  let orm: Orm;

  beforeAll(async () => {
    db = await createTestDatabase(dialect, 'migrations');
  });
  afterAll(async () => {
    await orm?.close(true);
    await db.drop();
  });

  it('four processes migrating the same fresh database at once all succeed and apply each migration once', async () => {
    const results = await Promise.all([1, 2, 3, 4].map(() => runMigrateChild(db.env)));
    for (const r of results) expect(r.code, r.out).toBe(0);
    const appliedCounts = results.map((r) => JSON.parse(r.out.trim().split('\n').at(-1)!).applied.length);
    expect(appliedCounts.reduce((a, b) => a + b, 0)).toBe(MIGRATIONS.length);

    orm = await connectOrm(db.config());
    const executed = await orm.migrator.getExecuted();
    expect(executed.map((m) => m.name)).toEqual(MIGRATIONS.map((m) => m.name));
  });

  it('after migrating, the schema diff against the entity metadata is empty', async () => {
    const diff = await orm.schema.getUpdateSchemaSQL({ wrap: false, safe: false, dropTables: true });
    expect(diff.trim()).toBe('');
  });

  it('migrating again applies nothing', async () => {
    const outcome = await migrateUnderLock(orm, db.config());
    expect(outcome.applied).toEqual([]);
    expect(outcome.schemaVersion).toBe(MIGRATIONS.at(-1)!.name);
  });
});
