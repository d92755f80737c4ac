/**
 * Snapshots carry every business table, and nothing decides that by omission: every
 * table the ORM maps or the migrations create must be either in the snapshot set or in
 * the explicit exclusion list below. A new table fails here until someone chooses.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { MikroORM } from '@mikro-orm/core';
import { loadConfig } from '../../src/config.js';
import { connectOrm, ormOptions } from '../../src/db/orm.js';
import { migrateUnderLock } from '../../src/db/migrate.js';
import { SYSTEM_ENTITIES } from '../../src/domain/entities/index.js';
import { MIGRATIONS } from '../../src/migrations/index.js';
import { snapshotTableSpecs, type TableSpec } from '../../src/snapshots/tables.js';
import { UPGRADES } from '../../src/snapshots/upgrades.js';

const MIGRATIONS_TABLE = 'mikro_orm_migrations';

describe('snapshot table coverage', () => {
  let dir: string;
  let orm: MikroORM;
  let specs: readonly TableSpec[];
  let excluded: Set<string>;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'meshq-coverage-'));
    const config = loadConfig({ DATABASE_URL: `sqlite:${join(dir, 'meshq.db')}`, SECRET_KEY: 'c'.repeat(64) });
    // Metadata discovery only: nothing connects.
    orm = new MikroORM(ormOptions(config));
    specs = snapshotTableSpecs(orm.getMetadata());
    excluded = new Set([...SYSTEM_ENTITIES.map((e) => orm.getMetadata().get(e.meta.class).tableName), MIGRATIONS_TABLE]);
  });
  afterAll(async () => {
    await orm?.close(true);
    rmSync(dir, { recursive: true, force: true });
  });

  it('puts every table the ORM maps either in snapshots or in the exclusion list, never both', () => {
    const snapshot = new Set(specs.map((s) => s.table));
    const mapped = [...orm.getMetadata().getAll().values()].filter((m) => !m.embeddable && !m.virtual && m.tableName).map((m) => m.tableName);
    const uncovered = mapped.filter((t) => !snapshot.has(t) && !excluded.has(t));
    expect(uncovered, 'tables neither snapshotted nor excluded (add the entity to BUSINESS_ENTITIES or SYSTEM_ENTITIES)').toEqual([]);
    expect([...snapshot].filter((t) => excluded.has(t))).toEqual([]);
    expect(snapshot.size).toBeGreaterThanOrEqual(7);
  });

  it('covers every table the migrations create', async () => {
    const config = loadConfig({ DATABASE_URL: `sqlite:${join(dir, 'migrated.db')}`, SECRET_KEY: 'c'.repeat(64) });
    const migrated = await connectOrm(config);
    try {
      await migrateUnderLock(migrated, config);
    } finally {
      await migrated.close(true);
    }
    const db = new Database(join(dir, 'migrated.db'), { readonly: true });
    const created = (db.prepare("select name from sqlite_master where type = 'table' and name not like 'sqlite_%'").all() as { name: string }[]).map((r) => r.name);
    db.close();
    const snapshot = new Set(specs.map((s) => s.table));
    expect(created.filter((t) => !snapshot.has(t) && !excluded.has(t))).toEqual([]);
    // And the snapshot never names a table the database does not have.
    expect([...snapshot].filter((t) => !created.includes(t))).toEqual([]);
  });

  it('keeps the administrator, API tokens, the job ledger, system state and stored snapshots out of snapshots', () => {
    expect([...excluded]).toEqual(expect.arrayContaining(['admin_user', 'api_token', 'job_record', 'system_state', 'snapshot_archive', MIGRATIONS_TABLE]));
    expect(specs.map((s) => s.table)).not.toContain('api_token');
  });

  it('lists tables parents first, so inserts in this order (and deletes in reverse) keep every foreign key', () => {
    const seen = new Set<string>();
    for (const spec of specs) {
      for (const col of spec.columns) {
        if (col.references) expect(seen.has(col.references.table), `${spec.table}.${col.name} -> ${col.references.table}`).toBe(true);
      }
      seen.add(spec.table);
    }
  });

  it('has an upgrade entry (a step or an explicit null) for every migration, and none for unknown ones', () => {
    const names = MIGRATIONS.map((m) => m.name);
    expect(names.filter((n) => !Object.hasOwn(UPGRADES, n)), 'declare these in src/snapshots/upgrades.ts').toEqual([]);
    expect(Object.keys(UPGRADES).filter((n) => !names.includes(n))).toEqual([]);
  });
});
