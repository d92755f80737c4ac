import { meshLinkIds } from '../../domain/pairs.js';
import type { JobContext } from '../context.js';
import { requestPushes } from '../pushes.js';
import type { MeshGenerate } from '../payloads.js';

/**
 * Creates every missing pair of a config in one job and one transaction: either the
 * whole mesh is there afterwards or nothing changed. Idempotent: existing pairs are
 * skipped, so a second run creates 0. The pairs are made by the database in one
 * set-based statement (LinkRepository.insertMissingPairs), so neither the job's time nor
 * its memory depends on walking pairs in JavaScript.
 */
export async function generateMesh(data: MeshGenerate, ctx: JobContext): Promise<{ created: number }> {
  // Locked: two concurrent runs would otherwise both insert the same missing pairs.
  const config = await ctx.repos.configs.requireForUpdate(data.configId);
  const nodes = await ctx.repos.nodes.countInConfig(config.id);
  const keepalive = data.persistentKeepalive ? data.persistentKeepalive : null;
  const created = await ctx.repos.links.insertMissingPairs(config.id, meshLinkIds(), keepalive);

  ctx.repos.audit.record({
    actor: ctx.actor,
    action: 'mesh.generate',
    entityType: 'config',
    entityId: config.id,
    detail: { name: config.name, nodes, created, persistentKeepalive: data.persistentKeepalive },
  });
  // New pairs change the peer lists of the config's agents: push them once committed
  // (MQTT enabled only). A run that created nothing changed nobody's configuration.
  if (created > 0) await requestPushes(ctx, { configId: config.id });
  return { created };
}
