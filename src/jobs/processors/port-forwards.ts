import { ConflictError, InvalidError } from '../../domain/errors.js';
import type { JobContext } from '../context.js';
import type { ById, PortForwardCreate } from '../payloads.js';

export async function createPortForward(data: PortForwardCreate, ctx: JobContext): Promise<{ id: string }> {
  if (data.fromNodeId === data.toNodeId) {
    throw new InvalidError(`a port-forward rule needs two different nodes (from and to are both ${data.fromNodeId})`);
  }
  // Locked: the free-target check below must not race a parallel rule for the same target.
  const config = await ctx.repos.configs.requireForUpdate(data.configId);
  const from = await ctx.repos.nodes.requireInConfig(config, data.fromNodeId);
  const to = await ctx.repos.nodes.requireInConfig(config, data.toNodeId);
  const taken = await ctx.repos.forwards.findByTarget(to.id, data.toPort, data.protocol);
  if (taken) {
    throw new ConflictError(
      `port ${data.toPort}/${data.protocol} on node "${to.name}" in config "${config.name}" is already the target of rule ${taken.id}`,
      { ruleId: taken.id },
    );
  }
  const id = ctx.repos.forwards.create(data);
  ctx.repos.audit.record({
    actor: ctx.actor,
    action: 'port-forward.create',
    entityType: 'port-forward',
    entityId: id,
    detail: {
      configId: config.id,
      from: `${from.name}:${data.fromPort}`,
      to: `${to.name}:${data.toPort}`,
      protocol: data.protocol,
    },
  });
  return { id };
}

export async function deletePortForward(data: ById, ctx: JobContext): Promise<{ id: string }> {
  const rule = await ctx.repos.forwards.require(data.id);
  await ctx.repos.forwards.delete(rule.id);
  ctx.repos.audit.record({
    actor: ctx.actor,
    action: 'port-forward.delete',
    entityType: 'port-forward',
    entityId: rule.id,
    detail: {
      configId: rule.configId,
      fromNodeId: rule.fromNodeId,
      fromPort: rule.fromPort,
      toNodeId: rule.toNodeId,
      toPort: rule.toPort,
      protocol: rule.protocol,
    },
  });
  return { id: rule.id };
}
