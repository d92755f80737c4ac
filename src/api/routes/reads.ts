/**
 * Reads, straight from the repositories (views without secrets: no private keys, no
 * hashes, no salts), paged as `{items, next}` with `?limit` and `?cursor`. Reads do not
 * go through jobs: they change nothing and should see the latest committed state.
 */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { AppContext } from '../context.js';
import { NotFoundError } from '../../domain/errors.js';
import { createRepositories, type Repositories } from '../../repositories/index.js';
import { pageQuery } from '../validation.js';
import {
  auditSchema,
  configSchema,
  errorResponses,
  json,
  laggingNodeSchema,
  linkSchema,
  nodeDetailSchema,
  nodeSchema,
  pageOf,
  portForwardSchema,
  settingSchema,
  tokenSchema,
} from '../schemas.js';

export const DEFAULT_READ_LIMIT = 100;

const idParams = z.strictObject({ id: z.uuid({ error: 'must be a UUID' }) });
const page = pageQuery(DEFAULT_READ_LIMIT);
const auditQuery = page.extend({
  actor: z.string().min(1).max(128).optional(),
  action: z.string().min(1).max(64).optional(),
  entityType: z.string().min(1).max(64).optional(),
  entityId: z.string().min(1).max(64).optional(),
});
const nodeQuery = page.extend({
  kind: z.enum(['dynamic', 'static']).optional(),
  online: z.enum(['true', 'false']).transform((v) => v === 'true').optional(),
});

type Page = z.infer<typeof page>;

export async function readRoutes(api: FastifyInstance, opts: { app: AppContext }): Promise<void> {
  const { app } = opts;
  // One fork per request: its identity map lives as long as the request, no longer.
  const repos = (): Repositories => createRepositories(app.uow.fork(), { serverKey: app.serverKey });
  const requireConfig = async (r: Repositories, id: string) => {
    const config = await r.configs.get(id);
    if (!config) throw new NotFoundError('config', id);
    return config;
  };
  const tags = ['reads'];
  const ok = (description: string, schema: z.ZodType) => ({ 200: json(description, schema), ...errorResponses() });

  api.get('/configs', { config: { scope: 'read' }, schema: { tags, summary: 'Mesh configs', querystring: page, response: ok('A page of configs', pageOf(configSchema)) } }, async (req) => {
    return repos().configs.list({}, req.query as Page);
  });

  api.get('/configs/:id', { config: { scope: 'read' }, schema: { tags, summary: 'A mesh config', params: idParams, response: ok('The config', configSchema) } }, async (req) => {
    const { id } = req.params as { id: string };
    return requireConfig(repos(), id);
  });

  api.get('/configs/:id/nodes', { config: { scope: 'read' }, schema: { tags, summary: "A config's nodes", params: idParams, querystring: nodeQuery, response: ok('A page of nodes', pageOf(nodeSchema)) } }, async (req) => {
    const { id } = req.params as { id: string };
    const { kind, online, ...pageReq } = req.query as z.infer<typeof nodeQuery>;
    const r = repos();
    await requireConfig(r, id);
    return r.nodes.list(id, { ...(kind ? { kind } : {}), ...(online !== undefined ? { online } : {}) }, pageReq);
  });

  const byNode = page.extend({ nodeId: z.uuid({ error: 'must be a UUID' }).optional() });
  api.get('/configs/:id/links', { config: { scope: 'read' }, schema: { tags, summary: "A config's peer links", params: idParams, querystring: byNode, response: ok('A page of links (one per direction)', pageOf(linkSchema)) } }, async (req) => {
    const { id } = req.params as { id: string };
    const { nodeId, ...pageReq } = req.query as z.infer<typeof byNode>;
    const r = repos();
    await requireConfig(r, id);
    return r.links.list(id, nodeId ? { nodeId } : {}, pageReq);
  });

  api.get('/configs/:id/port-forwards', { config: { scope: 'read' }, schema: { tags, summary: "A config's port-forward rules", params: idParams, querystring: byNode, response: ok('A page of port-forward rules', pageOf(portForwardSchema)) } }, async (req) => {
    const { id } = req.params as { id: string };
    const { nodeId, ...pageReq } = req.query as z.infer<typeof byNode>;
    const r = repos();
    await requireConfig(r, id);
    return r.forwards.list(id, nodeId ? { nodeId } : {}, pageReq);
  });

  api.get('/nodes/:id', { config: { scope: 'read' }, schema: { tags, summary: 'A node, with its MQTT credential (never the hash)', params: idParams, response: ok('The node', nodeDetailSchema) } }, async (req) => {
    const { id } = req.params as { id: string };
    const r = repos();
    const node = await r.nodes.get(id);
    if (!node) throw new NotFoundError('node', id);
    // sync: the revision meshq wants the node's agent to run and the one it acknowledged.
    return { ...node, credential: (await r.credentials.forNode(id)) ?? null, sync: await r.nodeSync.view(id) };
  });

  api.get(
    '/configs/:id/sync',
    { config: { scope: 'read' }, schema: { tags, summary: "The config's dynamic nodes whose agent has not acknowledged their desired config revision", params: idParams, response: ok('The lagging nodes', z.strictObject({ items: z.array(laggingNodeSchema) })) } },
    async (req) => {
      const { id } = req.params as { id: string };
      const r = repos();
      await requireConfig(r, id);
      return { items: await r.nodeSync.lagging(id) };
    },
  );

  api.get('/settings', { config: { scope: 'read' }, schema: { tags, summary: 'Settings, ordered by key', querystring: page, response: ok('A page of settings', pageOf(settingSchema)) } }, async (req) => {
    return repos().settings.list(req.query as Page);
  });

  api.get('/tokens', { config: { scope: 'admin' }, schema: { tags, summary: 'API tokens (never the token or its hash)', querystring: page, response: ok('A page of tokens', pageOf(tokenSchema)) } }, async (req) => {
    return repos().tokens.list(req.query as Page);
  });

  api.get('/audit', { config: { scope: 'read' }, schema: { tags, summary: 'The audit log, newest first', querystring: auditQuery, response: ok('A page of audit entries', pageOf(auditSchema)) } }, async (req) => {
    const { limit, cursor, ...filter } = req.query as z.infer<typeof auditQuery>;
    const defined = Object.fromEntries(Object.entries(filter).filter(([, v]) => v !== undefined));
    return repos().audit.list(defined, { limit, cursor });
  });
}
