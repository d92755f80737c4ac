import { ForeignKeyConstraintViolationException } from '@mikro-orm/core';
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

describe.each(DIALECTS)('data written at the first migration on %s', (dialect) => {
  let db: TestDatabase;
  let orm: Orm;

  beforeAll(async () => {
    db = await createTestDatabase(dialect, 'migrations_data');
    orm = await connectOrm(db.config());
  });
  afterAll(async () => {
    await orm?.close(true);
    await db?.drop();
  });

  it('is kept intact after migrating to the latest schema', async () => {
    await orm.migrator.up({ to: MIGRATIONS[0]!.name });
    const conn = orm.em.getConnection();
    const configId = '01900000-0000-7000-8000-000000000001';
    const nodeId = '01900000-0000-7000-8000-000000000002';
    const at = '2026-01-02T03:04:05.678Z';
    // Written with the first migration's columns only, as an old deployment would have.
    const ts = dialect === 'sqlite' ? Date.parse(at) : at;
    await conn.execute(
      'insert into mesh_config (id, name, subnet, listen_port, dns, protocol, awg, created_at, updated_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      [configId, 'old', '10.1.0.0/24', 51820, JSON.stringify(['10.1.0.1']), 'amneziawg', JSON.stringify({ jc: 4 }), ts, ts],
    );
    await conn.execute(
      'insert into node (id, config_id, name, kind, address, endpoint, listen_port, public_key, private_key_enc, client_initialized, online, last_seen_at, created_at, updated_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      [nodeId, configId, 'gw', 'static', '10.1.0.2', 'gw.example:51820', 51820, 'pk', 'v1:enc', false, false, null, ts, ts],
    );
    await conn.execute('insert into setting (key, value, updated_at) values (?, ?, ?)', ['site', JSON.stringify({ a: [1, 'x'] }), ts]);

    const outcome = await migrateUnderLock(orm, db.config());
    expect(outcome.applied).toEqual(MIGRATIONS.slice(1).map((m) => m.name));

    const [config] = await conn.execute('select * from mesh_config where id = ?', [configId]);
    expect(config).toMatchObject({ id: configId, name: 'old', subnet: '10.1.0.0/24', listen_port: 51820, protocol: 'amneziawg' });
    expect(parseJson(config!.dns)).toEqual(['10.1.0.1']);
    expect(parseJson(config!.awg)).toEqual({ jc: 4 });
    expect(new Date(config!.created_at as string | number).toISOString()).toBe(at);
    const [node] = await conn.execute('select * from node where id = ?', [nodeId]);
    expect(node).toMatchObject({ id: nodeId, config_id: configId, name: 'gw', address: '10.1.0.2', endpoint: 'gw.example:51820', private_key_enc: 'v1:enc' });
    const [setting] = await conn.execute('select * from setting where key = ?', ['site']);
    expect(parseJson(setting!.value)).toEqual({ a: [1, 'x'] });
  });
});

const parseJson = (v: unknown) => (typeof v === 'string' ? JSON.parse(v) : v);

/** A database of its own, migrated to the latest schema, for one describe block. */
function migratedDatabase(dialect: (typeof DIALECTS)[number], name: string): { orm: () => Orm } {
  let db: TestDatabase;
  let orm: Orm;
  beforeAll(async () => {
    db = await createTestDatabase(dialect, name);
    orm = await connectOrm(db.config());
    await migrateUnderLock(orm, db.config());
  });
  afterAll(async () => {
    await orm?.close(true);
    await db?.drop();
  });
  return { orm: () => orm };
}

/** Rows written by raw statements (as the schema of any version takes them), links with ids of their own. */
function rawRows(orm: Orm, dialect: (typeof DIALECTS)[number]) {
  const conn = orm.em.getConnection();
  const ts = dialect === 'sqlite' ? Date.now() : new Date().toISOString();
  let serial = 0;
  return {
    config: (id: string, name: string, subnet: string) =>
      conn.execute('insert into mesh_config (id, name, subnet, listen_port, dns, protocol, created_at, updated_at) values (?, ?, ?, ?, ?, ?, ?, ?)', [
        id,
        name,
        subnet,
        51820,
        '[]',
        'wireguard',
        ts,
        ts,
      ]),
    node: (id: string, configId: string, name: string, address: string) =>
      conn.execute('insert into node (id, config_id, name, kind, address, public_key, created_at, updated_at) values (?, ?, ?, ?, ?, ?, ?, ?)', [
        id,
        configId,
        name,
        'static',
        address,
        'pk',
        ts,
        ts,
      ]),
    /** One direction only, as a raw statement may write it. */
    link: (configId: string, from: string, to: string) =>
      conn.execute(
        `insert into peer_link (id, config_id, from_node_id, to_node_id, link_group_id, allowed_ips, persistent_keepalive) values (?, ?, ?, ?, ?, '[]', null)`,
        [`01900000-0000-7000-8000-0000000001${(serial++).toString(16).padStart(2, '0')}`, configId, from, to, '01900000-0000-7000-8000-0000000000ff'],
      ),
  };
}

/** Migrates down to the migration before `name`. */
async function downBefore(orm: Orm, name: string): Promise<number> {
  const index = MIGRATIONS.findIndex((m) => m.name === name);
  await orm.migrator.down({ to: MIGRATIONS[index - 1]!.name });
  return index;
}

describe.each(DIALECTS)('Migration20261201183700_peer_link_check_pass on %s', (dialect) => {
  const NAME = 'Migration20261201183700_peer_link_check_pass';
  const migrated = migratedDatabase(dialect, 'migrations_checks');

  it('goes down and up again, and links to a missing node are refused at either version', async () => {
    const orm = migrated.orm();
    const conn = orm.em.getConnection();
    const rows = rawRows(orm, dialect);
    const [configId, a, b] = ['01900000-0000-7000-8000-0000000000c1', '01900000-0000-7000-8000-0000000000c2', '01900000-0000-7000-8000-0000000000c3'];
    await rows.config(configId, 'checks', '10.1.0.0/24');
    for (const [id, address] of [
      [a, '10.1.0.2'],
      [b, '10.1.0.3'],
    ] as const) {
      await rows.node(id, configId, `n${address}`, address);
    }
    const link = (from: string, to: string) => rows.link(configId, from, to);
    const refused = async (from: string, to: string) =>
      link(from, to).then(
        () => undefined,
        (e: unknown) => orm.em.getDriver().convertException(e as Error),
      );
    const checkBody = async () =>
      dialect === 'postgresql'
        ? String((await conn.execute("select prosrc from pg_proc where proname = 'peer_link_check_references_on_insert'"))[0]!.prosrc)
        : '';
    const missing = '01900000-0000-7000-8000-0000000000ee';
    const links = async () => Number((await conn.execute('select count(*) as n from peer_link'))[0]!.n);

    const index = await downBefore(orm, NAME);
    expect((await orm.migrator.getExecuted()).map((m) => m.name)).toEqual(MIGRATIONS.slice(0, index).map((m) => m.name));
    if (dialect === 'postgresql') expect(await checkBody()).toContain('union');
    expect(await refused(a, missing)).toBeInstanceOf(ForeignKeyConstraintViolationException);
    await link(a, b);

    await orm.migrator.up();
    expect((await orm.migrator.getExecuted()).map((m) => m.name)).toEqual(MIGRATIONS.map((m) => m.name));
    // The latest body: each node column's (config, node) pairs (Migration20261202100000_peer_link_to_index).
    if (dialect === 'postgresql') expect(await checkBody()).toContain('from (select distinct "config_id", "to_node_id" from new_links)');
    expect(await refused(missing, b)).toBeInstanceOf(ForeignKeyConstraintViolationException);
    await link(b, a);
    expect(await links()).toBe(2);
    const diff = await orm.schema.getUpdateSchemaSQL({ wrap: false, safe: false, dropTables: true });
    expect(diff.trim()).toBe('');
  });
});

describe.each(DIALECTS)('Migration20261202100000_peer_link_to_index on %s', (dialect) => {
  const NAME = 'Migration20261202100000_peer_link_to_index';
  const migrated = migratedDatabase(dialect, 'migrations_to_index');

  it('drops the to_node_id index on PostgreSQL only, and a node delete takes one-way links to it at either version', async () => {
    const orm = migrated.orm();
    const conn = orm.em.getConnection();
    const rows = rawRows(orm, dialect);
    const configId = '01900000-0000-7000-8000-0000000000d1';
    const nodes = ['01900000-0000-7000-8000-0000000000d2', '01900000-0000-7000-8000-0000000000d3', '01900000-0000-7000-8000-0000000000d4'];
    await rows.config(configId, 'to-index', '10.2.0.0/24');
    for (const [i, id] of nodes.entries()) await rows.node(id, configId, `n${i}`, `10.2.0.${i + 2}`);
    const oneWay = (from: string, to: string) => rows.link(configId, from, to);
    const linksTo = async (id: string) => Number((await conn.execute('select count(*) as n from peer_link where to_node_id = ?', [id]))[0]!.n);
    const hasToIndex = async () =>
      dialect === 'postgresql'
        ? (await conn.execute("select 1 from pg_indexes where indexname = 'peer_link_to_node_id_index'")).length === 1
        : (await conn.execute("select 1 from sqlite_master where name = 'peer_link_to_node_id_index'")).length === 1;

    await downBefore(orm, NAME);
    expect(await hasToIndex()).toBe(true);
    await oneWay(nodes[0]!, nodes[1]!);
    await conn.execute('delete from node where id = ?', [nodes[1]]);
    expect(await linksTo(nodes[1]!)).toBe(0);

    if (dialect === 'postgresql') {
      // A link made by hand to a node of another config, which the old checks let through:
      // the migration refuses to run over it, and runs once it is gone.
      const otherConfig = '01900000-0000-7000-8000-0000000000d5';
      const otherNode = '01900000-0000-7000-8000-0000000000d6';
      await rows.config(otherConfig, 'to-index-other', '10.3.0.0/24');
      await rows.node(otherNode, otherConfig, 'other', '10.3.0.2');
      await oneWay(nodes[0]!, otherNode);
      await expect(orm.migrator.up()).rejects.toThrow(/links node 01900000-0000-7000-8000-0000000000d6 of config 01900000-0000-7000-8000-0000000000d5/);
      expect(await hasToIndex()).toBe(true);
      await conn.execute('delete from peer_link where to_node_id = ?', [otherNode]);
    }
    await orm.migrator.up();
    expect(await hasToIndex()).toBe(dialect === 'sqlite');
    await oneWay(nodes[0]!, nodes[2]!);
    await conn.execute('delete from node where id = ?', [nodes[2]]);
    expect(await linksTo(nodes[2]!)).toBe(0);
    const diff = await orm.schema.getUpdateSchemaSQL({ wrap: false, safe: false, dropTables: true });
    expect(diff.trim()).toBe('');
  });
});
