/**
 * mesh.generate at the size the design names: 300 nodes, 44,850 pairs, 89,700 links in
 * one job, on SQLite and PostgreSQL. Its own file so it runs beside the other suites.
 */
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Em } from '../../src/db/orm.js';
import { createRepositories } from '../../src/repositories/index.js';
import type { JobContext } from '../../src/jobs/context.js';
import { generateMesh, PAIRS_PER_BATCH } from '../../src/jobs/processors/mesh.js';
import { DIALECTS } from '../support/db.js';
import { createHarness, type Harness } from '../support/harness.js';

const NODES = 300;
const PAIRS = (NODES * (NODES - 1)) / 2;

describe.each(DIALECTS)('mesh.generate at scale on %s', (dialect) => {
  let h: Harness;

  beforeAll(async () => {
    h = await createHarness(dialect, 'mesh');
  });
  afterAll(async () => {
    await h?.close();
  });

  async function configWithNodes(name: string, subnet: string, count: number): Promise<string> {
    const { id: configId } = await h.run<{ id: string }>('config.create', { name, subnet });
    for (let i = 0; i < count; i++) await h.run('node.create', { configId, name: `n${i}`, kind: 'static' });
    return configId;
  }

  it(`links ${NODES} nodes in one job: ${PAIRS} pairs, ${PAIRS * 2} links; a second run creates none`, async () => {
    const configId = await configWithNodes('big', '10.60.0.0/16', NODES);

    expect(await h.run('mesh.generate', { configId })).toEqual({ created: PAIRS });

    const stats = await h.read(async (r) => ({
      links: await r.links.countInConfig(configId),
      pairs: (await r.links.existingPairKeys(configId)).size,
    }));
    expect(stats).toEqual({ links: PAIRS * 2, pairs: PAIRS });

    expect(await h.run('mesh.generate', { configId })).toEqual({ created: 0 });
    expect(await h.read((r) => r.links.countInConfig(configId))).toBe(PAIRS * 2);
  });

  it('reports progress per batch and keeps the inserted links out of the identity map', async () => {
    const configId = await configWithNodes('progress', '10.61.0.0/24', 50); // 1,225 pairs: 3 batches
    const progress: number[] = [];
    let em: Em | undefined;

    const result = await h.uow.write(async (tx) => {
      em = tx;
      const ctx: JobContext = {
        em: tx,
        repos: createRepositories(tx, { serverKey: h.serverKey }),
        log: pino({ level: 'silent' }),
        config: h.config,
        actor: 'test',
        jobId: 'direct',
        afterCommit: () => undefined,
        enqueue: () => undefined,
        progress: async (p) => {
          progress.push(p);
        },
      };
      return generateMesh({ configId, persistentKeepalive: 25 }, ctx);
    });

    expect(result).toEqual({ created: 1225 });
    expect(progress).toHaveLength(Math.ceil(1225 / PAIRS_PER_BATCH));
    expect(progress).toEqual([...progress].sort((a, b) => a - b));
    // the config row and the audit record; no PeerLink entities
    const managed = em!.getUnitOfWork().getIdentityMap().values();
    expect(managed.length).toBeLessThan(10);
    expect(await h.read((r) => r.links.countInConfig(configId))).toBe(2450);
  });
});
