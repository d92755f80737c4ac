/**
 * peer_link's references on both dialects: foreign keys on SQLite, statement-level
 * triggers on PostgreSQL (src/migrations/peer-link-references.ts). The same rules either way: a
 * link to a missing config or node is refused with the foreign-key error the runner maps
 * to NOT_FOUND, deleting a node or a config deletes its links, and a referenced id cannot
 * change.
 */
import { ForeignKeyConstraintViolationException } from '@mikro-orm/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newId } from '../../src/domain/ids.js';
import { toDomainError } from '../../src/jobs/errors.js';
import { createRepositories } from '../../src/repositories/index.js';
import type { PeerLinkDraft } from '../../src/domain/pairs.js';
import { DIALECTS } from '../support/db.js';
import { createHarness, type Harness } from '../support/harness.js';

describe.each(DIALECTS)('peer_link references on %s', (dialect) => {
  let h: Harness;

  beforeAll(async () => {
    h = await createHarness(dialect, 'peer_link_refs');
  });
  afterAll(async () => {
    await h?.close();
  });

  /** A config with `count` nodes, fully meshed unless told otherwise; returns the ids. */
  async function meshedConfig(name: string, subnet: string, count: number, mesh = true): Promise<{ configId: string; nodeIds: string[] }> {
    const { id: configId } = await h.run<{ id: string }>('config.create', { name, subnet });
    const nodeIds: string[] = [];
    for (let i = 0; i < count; i++) nodeIds.push((await h.run<{ id: string }>('node.create', { configId, name: `n${i}`, kind: 'static' })).id);
    if (mesh) await h.run('mesh.generate', { configId });
    return { configId, nodeIds };
  }

  const draft = (fromNodeId: string, toNodeId: string): PeerLinkDraft => ({
    fromNodeId,
    toNodeId,
    linkGroupId: newId(),
    allowedIps: ['10.0.0.1/32'],
    persistentKeepalive: null,
  });

  /** Inserts one pair in its own write transaction; resolves to the error it failed with. */
  async function insertPairError(configId: string, a: string, b: string): Promise<unknown> {
    return h.uow
      .write((em, tx) => createRepositories(em, { serverKey: h.serverKey, tx }).links.insertPair(configId, draft(a, b), draft(b, a)))
      .then(
        () => undefined,
        (err: unknown) => err,
      );
  }

  /** One direction only, by a raw statement (no meshq writer makes one). */
  const oneWayLink = (configId: string, from: string, to: string) =>
    h.uow.write((em) =>
      em.execute(
        `insert into peer_link (id, config_id, from_node_id, to_node_id, link_group_id, allowed_ips, persistent_keepalive) values (?, ?, ?, ?, ?, '[]', null)`,
        [newId(), configId, from, to, newId()],
      ),
    );

  const linkCount = async (sql: string, params: unknown[]): Promise<number> => {
    const rows = await h.uow.fork().getConnection().execute<{ n: number | string }[]>(`select count(*) as n from peer_link where ${sql}`, params);
    return Number(rows[0]!.n);
  };

  it('refuses a link to a missing node or config with the foreign-key error (NOT_FOUND) and writes nothing', async () => {
    const { configId, nodeIds } = await meshedConfig('refs-missing', '10.61.0.0/24', 2, false);
    const before = await linkCount('config_id = ?', [configId]);
    for (const [config, a, b] of [
      [configId, nodeIds[0]!, newId()],
      [configId, newId(), nodeIds[1]!],
      [newId(), nodeIds[0]!, nodeIds[1]!],
    ] as const) {
      const err = await insertPairError(config, a, b);
      expect(err).toBeInstanceOf(ForeignKeyConstraintViolationException);
      expect(toDomainError(err)?.code).toBe('NOT_FOUND');
    }
    expect(await linkCount('config_id = ?', [configId])).toBe(before);
  });

  it('deleting a node deletes its links in both directions, and only those', async () => {
    const { configId, nodeIds } = await meshedConfig('refs-node', '10.62.0.0/24', 4);
    expect(await linkCount('config_id = ?', [configId])).toBe(12);
    await h.run('node.delete', { id: nodeIds[1] });
    expect(await linkCount('from_node_id = ? or to_node_id = ?', [nodeIds[1], nodeIds[1]])).toBe(0);
    expect(await linkCount('config_id = ?', [configId])).toBe(6);
    // Several nodes in one statement.
    await h.uow.write((em) => em.execute('delete from node where id in (?, ?)', [nodeIds[2], nodeIds[3]]));
    expect(await linkCount('config_id = ?', [configId])).toBe(0);
  });

  it('deleting a config deletes its links, and no other config loses any', async () => {
    const gone = await meshedConfig('refs-config-a', '10.63.0.0/24', 3);
    const kept = await meshedConfig('refs-config-b', '10.64.0.0/24', 3);
    await h.run('config.delete', { id: gone.configId });
    expect(await linkCount('config_id = ?', [gone.configId])).toBe(0);
    expect(await linkCount('from_node_id in (?, ?, ?)', gone.nodeIds)).toBe(0);
    expect(await linkCount('config_id = ?', [kept.configId])).toBe(6);
  });

  it("refuses a link whose node belongs to another config: the job's check on both dialects, the database too on PostgreSQL", async () => {
    const { configId, nodeIds } = await meshedConfig('refs-cross-a', '10.67.0.0/24', 1, false);
    const other = await meshedConfig('refs-cross-b', '10.68.0.0/24', 1, false);
    const refused = await h.fail('link.create', { configId, fromNodeId: nodeIds[0], toNodeId: other.nodeIds[0] });
    expect(refused.code).toBe('NOT_FOUND');
    if (dialect === 'postgresql') {
      // Either column, and the error says which node and config (PostgreSQL has no
      // to_node_id index: the links to a node are found from its config's nodes).
      for (const [a, b, column] of [
        [nodeIds[0]!, other.nodeIds[0]!, 'to_node_id'],
        [other.nodeIds[0]!, nodeIds[0]!, 'from_node_id'],
      ] as const) {
        const err = await oneWayLink(configId, a, b).then(
          () => undefined,
          (e: unknown) => h.orm.em.getDriver().convertException(e as Error),
        );
        expect(err).toBeInstanceOf(ForeignKeyConstraintViolationException);
        expect(toDomainError(err)?.code).toBe('NOT_FOUND');
        expect((err as { detail?: string }).detail).toContain(`Key (config_id, ${column})=(${configId}, ${other.nodeIds[0]})`);
      }
    }
    expect(await linkCount('config_id in (?, ?)', [configId, other.configId])).toBe(0);
  });

  it('deleting a node deletes a one-way link to it, and refuses changing the id of a node only linked to', async () => {
    const { configId, nodeIds } = await meshedConfig('refs-one-way', '10.69.0.0/24', 3, false);
    await oneWayLink(configId, nodeIds[0]!, nodeIds[1]!);
    await oneWayLink(configId, nodeIds[0]!, nodeIds[2]!);
    const err = await h.uow.write((em) => em.execute('update node set id = ? where id = ?', [newId(), nodeIds[2]])).then(
      () => undefined,
      (e: unknown) => h.orm.em.getDriver().convertException(e as Error),
    );
    expect(err).toBeInstanceOf(ForeignKeyConstraintViolationException);
    await h.run('node.delete', { id: nodeIds[1] });
    expect(await linkCount('to_node_id = ?', [nodeIds[1]])).toBe(0);
    expect(await linkCount('config_id = ?', [configId])).toBe(1);
  });

  // pg_dump's output, for one, loads rows with an empty search_path on PostgreSQL (SQLite
  // has none: there the same raw statement is checked by its foreign keys).
  it('checks a raw statement, on PostgreSQL under an empty search_path, the same', async () => {
    const { configId, nodeIds } = await meshedConfig('refs-path', '10.66.0.0/24', 2, false);
    const table = dialect === 'postgresql' ? 'public.peer_link' : 'peer_link';
    const insert = (to: string) =>
      h.uow.write(async (em) => {
        if (dialect === 'postgresql') await em.execute("select set_config('search_path', '', true)");
        await em.execute(
          `insert into ${table} (id, config_id, from_node_id, to_node_id, link_group_id, allowed_ips, persistent_keepalive) values (?, ?, ?, ?, ?, '[]', null)`,
          [newId(), configId, nodeIds[0], to, newId()],
        );
      });
    await insert(nodeIds[1]!);
    const err = await insert(newId()).then(
      () => undefined,
      (e: unknown) => h.orm.em.getDriver().convertException(e as Error),
    );
    expect(err).toBeInstanceOf(ForeignKeyConstraintViolationException);
    expect(await linkCount('config_id = ?', [configId])).toBe(1);
  });

  it('refuses changing the id of a node or config that links reference', async () => {
    const { configId, nodeIds } = await meshedConfig('refs-ids', '10.65.0.0/24', 2);
    for (const [table, id] of [
      ['node', nodeIds[0]!],
      ['mesh_config', configId],
    ] as const) {
      // A raw statement's error is the driver's: converted as the ORM converts its own.
      const err = await h.uow.write((em) => em.execute(`update ${table} set id = ? where id = ?`, [newId(), id])).then(
        () => undefined,
        (e: unknown) => h.orm.em.getDriver().convertException(e as Error),
      );
      expect(err, table).toBeInstanceOf(ForeignKeyConstraintViolationException);
    }
    expect(await linkCount('config_id = ?', [configId])).toBe(2);
  });
});
