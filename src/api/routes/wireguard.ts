/**
 * GET /api/v1/nodes/:id/wireguard.conf: the node's wg-quick (or awg-quick) file, for nodes
 * without an agent (src/domain/wireguard-conf.ts renders it).
 *
 * Its scope depends on the node. When meshq holds the node's private key, the file
 * carries it, and revealing a node secret takes `credentials`; when the node's agent
 * holds its key, the file is made of what `read` already shows (addresses, public keys,
 * endpoints), and `read` is enough. The route declares `read` (checked before anything
 * is read) and asks for `credentials` here once it knows who holds the key, answering the
 * same 403 as any other missing scope. A caller with `read` only can tell the two kinds
 * apart anyway: GET /api/v1/nodes/:id shows the key mode.
 */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { AppContext } from '../context.js';
import { forbidden } from '../auth.js';
import { NotFoundError } from '../../domain/errors.js';
import { hasScope } from '../../domain/scopes.js';
import { renderWireguardConf, type WireguardConfPeer } from '../../domain/wireguard-conf.js';
import { readPeers } from '../../jobs/processors/push-config.js';
import { createRepositories } from '../../repositories/index.js';
import { errorResponses, media } from '../schemas.js';

const idParams = z.strictObject({ id: z.uuid({ error: 'must be a UUID' }) });

export async function wireguardRoutes(api: FastifyInstance, opts: { app: AppContext }): Promise<void> {
  const { app } = opts;

  api.get(
    '/nodes/:id/wireguard.conf',
    {
      config: { scope: 'read' },
      schema: {
        tags: ['reads'],
        summary: "A node's wg-quick / awg-quick configuration file (scope credentials when meshq holds the node's private key)",
        params: idParams,
        response: { 200: media('The wg-quick / awg-quick file, as an attachment', 'text/plain'), ...errorResponses() },
      },
    },
    async (req, reply) => {
      const { id } = req.params as { id: string };
      const repos = createRepositories(app.uow.fork(), { serverKey: app.serverKey });
      const node = await repos.nodes.get(id);
      if (!node) throw new NotFoundError('node', id);
      if (node.keyMode === 'server' && req.principal && !hasScope(req.principal.scopes, 'credentials')) {
        throw forbidden(req.principal, 'credentials');
      }
      const config = await repos.configs.require(node.configId);
      const peers: WireguardConfPeer[] = await readPeers(repos, node.id);
      const text = renderWireguardConf({
        nodeName: node.name,
        configName: config.name,
        protocol: config.protocol,
        address: node.address,
        subnet: config.subnet,
        listenPort: node.listenPort ?? config.listenPort,
        privateKey: node.keyMode === 'server' ? await repos.nodes.privateKey(node.id) : null,
        dns: config.dns,
        mtu: config.mtu,
        awg: config.awg,
        peers,
      });
      return reply
        .type('text/plain; charset=utf-8')
        .header('content-disposition', `attachment; filename="${node.name}.conf"`)
        // A private key may be in it: no cache keeps a copy.
        .header('cache-control', 'no-store')
        .send(text);
    },
  );
}
