import { ConflictError, InvalidError, NotFoundError } from '../../domain/errors.js';
import { protocolAwgProblem } from '../../domain/validation.js';
import type { JobContext } from '../context.js';
import type { ById, ConfigCreate, ConfigUpdate } from '../payloads.js';
import { requestPushes } from '../pushes.js';

async function assertNameFree(ctx: JobContext, name: string, exceptId?: string): Promise<void> {
  const other = await ctx.repos.configs.findByName(name);
  if (other && other.id !== exceptId) throw new ConflictError(`a config named "${name}" already exists`);
}

export async function createConfig(data: ConfigCreate, ctx: JobContext): Promise<{ id: string }> {
  await assertNameFree(ctx, data.name);
  const id = ctx.repos.configs.create({ ...data, awg: data.awg ?? null });
  ctx.repos.audit.record({
    actor: ctx.actor,
    action: 'config.create',
    entityType: 'config',
    entityId: id,
    detail: { name: data.name, subnet: data.subnet, protocol: data.protocol },
  });
  return { id };
}

export async function updateConfig(data: ConfigUpdate, ctx: JobContext): Promise<{ id: string }> {
  const { id, ...patch } = data;
  const before = await ctx.repos.configs.require(id);
  if (patch.name !== undefined && patch.name !== before.name) await assertNameFree(ctx, patch.name, id);
  const awgProblem = protocolAwgProblem(patch.protocol ?? before.protocol, 'awg' in patch ? patch.awg : before.awg);
  if (awgProblem) throw new InvalidError(`config "${before.name}": ${awgProblem}`);
  await ctx.repos.configs.update(id, patch);
  ctx.repos.audit.record({
    actor: ctx.actor,
    action: 'config.update',
    entityType: 'config',
    entityId: id,
    detail: { name: patch.name ?? before.name, changed: Object.keys(patch).sort() },
  });
  // Subnet-wide settings (DNS, listen port, protocol, AmneziaWG) reach every agent of the config.
  await requestPushes(ctx, { configId: id });
  return { id };
}

/**
 * The database cascades the delete to nodes, links, forwards and credentials. If any
 * credential goes with it, EMQX still has those users until the next sync: mark it.
 */
export async function deleteConfig(data: ById, ctx: JobContext): Promise<{ id: string }> {
  const config = await ctx.repos.configs.get(data.id);
  if (!config) throw new NotFoundError('config', data.id);
  const nodes = await ctx.repos.nodes.countInConfig(config.id);
  const credentials = await ctx.repos.credentials.countInConfig(config.id);
  await ctx.repos.configs.delete(config.id);
  if (credentials > 0) await ctx.repos.system.markBrokerSyncPending(`config.delete ${config.id}`);
  ctx.repos.audit.record({
    actor: ctx.actor,
    action: 'config.delete',
    entityType: 'config',
    entityId: config.id,
    detail: { name: config.name, nodes, credentials },
  });
  return { id: config.id };
}
