import type { FastifyInstance } from 'fastify';
import type { ApiMetrics } from '../metrics.js';
import { errorResponses, media } from '../schemas.js';

export async function metricsRoutes(api: FastifyInstance, opts: { metrics: ApiMetrics }): Promise<void> {
  api.get('/metrics', { config: { scope: 'read' }, schema: {
        tags: ['health'],
        summary: 'Prometheus metrics: HTTP requests, queue depth by state, broker lag (jobs are counted by the workers)',
        response: { 200: media('Prometheus text exposition format', 'text/plain'), ...errorResponses() },
      },
    }, async (_req, reply) => {
    const text = await opts.metrics.text();
    return reply.type(opts.metrics.contentType).send(text);
  });
}
