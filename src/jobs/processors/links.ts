/**
 * Single peer pairs: `link.create` and `link.delete`, for topologies other than the full
 * mesh (a hub and its spokes, a gateway routing a LAN). A pair is two directional links
 * sharing a linkGroupId, exactly the shape mesh.generate writes, so the two mix freely: a
 * pair made here is skipped by a later mesh.generate, and snapshots carry both alike.
 */
import { canonicalCidr } from '../../domain/cidr.js';
import { ConflictError, InvalidError, NotFoundError } from '../../domain/errors.js';
import { newId } from '../../domain/ids.js';
import { linksForPair } from '../../domain/pairs.js';
import type { JobContext } from '../context.js';
import type { ById, LinkCreate } from '../payloads.js';
import { requestPushes } from '../pushes.js';

export async function createLink(data: LinkCreate, ctx: JobContext): Promise<{ id: string; reverseId: string; linkGroupId: string }> {
  // Locked like mesh.generate: a concurrent link.create of the reverse direction (or a
  // mesh.generate) must see this pair, or the pair would exist twice.
  const config = await ctx.repos.configs.requireForUpdate(data.configId);
  if (data.fromNodeId === data.toNodeId) {
    throw new InvalidError(`a link needs two different nodes (fromNodeId and toNodeId are both ${data.fromNodeId})`);
  }
  const from = await ctx.repos.nodes.requireInConfig(config, data.fromNodeId);
  const to = await ctx.repos.nodes.requireInConfig(config, data.toNodeId);
  const existing = await ctx.repos.links.between(from.id, to.id);
  if (existing) {
    throw new ConflictError(`nodes "${from.name}" and "${to.name}" are already linked (link ${existing.id}); delete that pair first to change it`, {
      linkId: existing.id,
      linkGroupId: existing.linkGroupId,
    });
  }
  const linkGroupId = newId();
  const addresses = new Map([
    [from.id, from.address],
    [to.id, to.address],
  ]);
  const [forward, reverse] = linksForPair(from.id, to.id, {
    linkGroupId,
    addressOf: (id) => addresses.get(id),
    keepalive: data.persistentKeepalive,
  });
  if (data.allowedIps) forward.allowedIps = data.allowedIps.map((c) => canonicalCidr(c, 'allowedIps'));
  const [id, reverseId] = await ctx.repos.links.insertPair(config.id, forward, reverse);

  ctx.repos.audit.record({
    actor: ctx.actor,
    action: 'link.create',
    entityType: 'link',
    entityId: id,
    detail: {
      configId: config.id,
      linkGroupId,
      from: { id: from.id, name: from.name },
      to: { id: to.id, name: to.name },
      allowedIps: forward.allowedIps,
      persistentKeepalive: forward.persistentKeepalive,
    },
  });
  await requestPushes(ctx, { nodeIds: [from.id, to.id] });
  return { id, reverseId, linkGroupId };
}

/** Removes the pair the link belongs to: both directions, whichever one `id` names. */
export async function deleteLink(data: ById, ctx: JobContext): Promise<{ id: string; linkGroupId: string; deleted: number }> {
  const link = await ctx.repos.links.get(data.id);
  if (!link) throw new NotFoundError('link', data.id);
  await ctx.repos.configs.requireForUpdate(link.configId);
  const deleted = await ctx.repos.links.deletePair(link);
  ctx.repos.audit.record({
    actor: ctx.actor,
    action: 'link.delete',
    entityType: 'link',
    entityId: link.id,
    detail: { configId: link.configId, linkGroupId: link.linkGroupId, fromNodeId: link.fromNodeId, toNodeId: link.toNodeId, deleted },
  });
  await requestPushes(ctx, { nodeIds: [link.fromNodeId, link.toNodeId] });
  return { id: link.id, linkGroupId: link.linkGroupId, deleted };
}
