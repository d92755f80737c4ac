import { ConflictError, NotFoundError } from '../../domain/errors.js';
import type { JobContext } from '../context.js';
import type { ById, TokenCreate } from '../payloads.js';

/** The API generated the token and its id; only the hash reaches the job and the database. */
export async function createToken(data: TokenCreate, ctx: JobContext): Promise<{ id: string }> {
  if (await ctx.repos.tokens.exists(data.id)) throw new ConflictError(`API token ${data.id} already exists`);
  const expiresAt = data.expiresAt ? new Date(data.expiresAt) : null;
  ctx.repos.tokens.create({ id: data.id, name: data.name, tokenHash: data.tokenHash, scopes: data.scopes, expiresAt });
  ctx.repos.audit.record({
    actor: ctx.actor,
    action: 'token.create',
    entityType: 'token',
    entityId: data.id,
    detail: { name: data.name, scopes: data.scopes, expiresAt: expiresAt?.toISOString() ?? null },
  });
  return { id: data.id };
}

export async function revokeToken(data: ById, ctx: JobContext): Promise<{ id: string }> {
  const revoked = await ctx.repos.tokens.revoke(data.id);
  if (!revoked) throw new NotFoundError('API token', data.id);
  ctx.repos.audit.record({
    actor: ctx.actor,
    action: 'token.revoke',
    entityType: 'token',
    entityId: data.id,
    detail: { name: revoked.name },
  });
  return { id: data.id };
}
