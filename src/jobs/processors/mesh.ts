import { newId } from '../../domain/ids.js';
import type { NewLink } from '../../repositories/links.js';
import { linksForPair, missingPairs, pairCount, type NodePair } from '../../domain/pairs.js';
import type { JobContext } from '../context.js';
import { requestPushes } from '../pushes.js';
import type { MeshGenerate } from '../payloads.js';

/**
 * 500 pairs = 1,000 links per INSERT: few enough round trips for 89,700 links (90
 * statements), small enough that a statement's parameters (7 per row) stay far below
 * every driver's limit and only one batch of plain rows is in memory at a time.
 */
export const PAIRS_PER_BATCH = 500;

/**
 * Creates every missing pair of a config in one job and one transaction: either the
 * whole mesh is there afterwards or nothing changed. Idempotent: existing pairs are
 * skipped, so a second run creates 0.
 */
export async function generateMesh(data: MeshGenerate, ctx: JobContext): Promise<{ created: number }> {
  // Locked: two concurrent runs would otherwise both insert the same missing pairs.
  const config = await ctx.repos.configs.requireForUpdate(data.configId);
  const members = await ctx.repos.nodes.meshMembers(config.id);
  const addresses = new Map(members.map((m) => [m.id, m.address]));
  const existing = await ctx.repos.links.existingPairKeys(config.id);
  const missing = Math.max(pairCount(members.length) - existing.size, 0);

  const toLinks = ([a, b]: NodePair): NewLink[] =>
    linksForPair(a, b, {
      linkGroupId: newId(),
      addressOf: (id) => addresses.get(id),
      keepalive: data.persistentKeepalive,
    }).map((link) => ({ configId: config.id, ...link }));

  let created = 0;
  let reported = -1;
  for (const batch of missingPairs(addresses.keys(), existing, PAIRS_PER_BATCH)) {
    await ctx.repos.links.insertBatch(batch.flatMap(toLinks));
    created += batch.length;
    const percent = Math.min(99, Math.floor((created * 100) / Math.max(missing, 1)));
    if (percent !== reported) {
      reported = percent;
      await ctx.progress(percent);
    }
  }

  ctx.repos.audit.record({
    actor: ctx.actor,
    action: 'mesh.generate',
    entityType: 'config',
    entityId: config.id,
    detail: { name: config.name, nodes: members.length, created, persistentKeepalive: data.persistentKeepalive },
  });
  // New pairs change the peer lists of the config's agents: push them once committed
  // (MQTT enabled only). A run that created nothing changed nobody's configuration.
  if (created > 0) await requestPushes(ctx, { configId: config.id });
  return { created };
}
